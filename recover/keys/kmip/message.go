package kmip

import (
	"fmt"
	"strconv"
)

// MaxBatchItems caps the batch items of a response (requests carry two at
// most).
const MaxBatchItems = 8

// MaxKeyIDLen caps a Unique Identifier sent or accepted (KMIP ids are
// UUIDs or small integers; the cap keeps a locator's junk off the wire).
const MaxKeyIDLen = 1024

// attribute names asked for by GetAttributes (KMIP 1.x names).
const (
	attrState      = "State"
	attrAlgorithm  = "Cryptographic Algorithm"
	attrLength     = "Cryptographic Length"
	attrObjectType = "Object Type"
)

// requestItem is one batch item of a request.
type requestItem struct {
	op      Operation
	id      []byte // UniqueBatchItemID (8 bytes)
	payload Item   // RequestPayload structure
}

// encodeRequest builds a RequestMessage.
func encodeRequest(v ProtocolVersion, maxResponse int32, items []requestItem) ([]byte, error) {
	hdr := Structure(TagRequestHeader,
		Structure(TagProtocolVersion, Integer(TagProtocolVersionMajor, v.Major), Integer(TagProtocolVersionMinor, v.Minor)),
		Integer(TagMaximumResponseSize, maxResponse),
		Integer(TagBatchCount, int32(len(items))),
	)
	msg := Structure(TagRequestMessage, hdr)
	for _, it := range items {
		bi := Structure(TagBatchItem, Enum(TagOperation, uint32(it.op)))
		if it.id != nil {
			bi.Items = append(bi.Items, Bytes(TagUniqueBatchItemID, it.id))
		}
		bi.Items = append(bi.Items, it.payload)
		msg.Items = append(msg.Items, bi)
	}
	return Encode(msg)
}

func getPayload(uid string) Item {
	return Structure(TagRequestPayload, Text(TagUniqueIdentifier, uid), Enum(TagKeyFormatType, uint32(FormatRaw)))
}

func getAttributesPayload(uid string) Item {
	return Structure(TagRequestPayload, Text(TagUniqueIdentifier, uid),
		Text(TagAttributeName, attrState), Text(TagAttributeName, attrAlgorithm),
		Text(TagAttributeName, attrLength), Text(TagAttributeName, attrObjectType))
}

func discoverVersionsPayload(vs []ProtocolVersion) Item {
	p := Structure(TagRequestPayload)
	for _, v := range vs {
		p.Items = append(p.Items, Structure(TagProtocolVersion,
			Integer(TagProtocolVersionMajor, v.Major), Integer(TagProtocolVersionMinor, v.Minor)))
	}
	return p
}

// response is a decoded ResponseMessage.
type response struct {
	version ProtocolVersion
	items   []responseItem
}

// responseItem is one batch item of a response.
type responseItem struct {
	op      Operation // 0 when the server left it out
	id      []byte    // UniqueBatchItemID, nil when absent
	status  ResultStatus
	reason  ResultReason // 0 when absent
	message string       // ResultMessage, as sent (untrusted: quote it)
	payload *Item        // ResponsePayload, nil when absent
}

// malformed returns a *DecodeError for a fault found after decoding (the
// offset is not kept).
func malformed(tag Tag, format string, a ...any) error {
	return &DecodeError{Offset: -1, Tag: tag, Msg: fmt.Sprintf(format, a...)}
}

// field returns the one child of p with the tag, checking its type; nil
// when absent. A repeated field is malformed.
func field(p *Item, tag Tag, typ Type, required bool) (*Item, error) {
	var f *Item
	for i := range p.Items {
		c := &p.Items[i]
		if c.Tag != tag {
			continue
		}
		if f != nil {
			return nil, malformed(tag, "repeated in %v", p.Tag)
		}
		if c.Type != typ {
			return nil, malformed(tag, "is a %v, must be a %v", c.Type, typ)
		}
		f = c
	}
	if f == nil && required {
		return nil, malformed(tag, "missing from %v", p.Tag)
	}
	return f, nil
}

func parseVersion(p *Item) (ProtocolVersion, error) {
	maj, err := field(p, TagProtocolVersionMajor, TypeInteger, true)
	if err != nil {
		return ProtocolVersion{}, err
	}
	min, err := field(p, TagProtocolVersionMinor, TypeInteger, true)
	if err != nil {
		return ProtocolVersion{}, err
	}
	return ProtocolVersion{int32(maj.Int), int32(min.Int)}, nil
}

// parseResponse decodes and checks a ResponseMessage: the header (version,
// batch count equal to the items present) and each batch item (status,
// reason, message, payload), every known field of the right type and
// present once. Unknown header fields (later KMIP versions) are ignored;
// anything else unknown at message or batch-item level is malformed.
func parseResponse(b []byte) (*response, error) {
	root, err := Decode(b)
	if err != nil {
		return nil, err
	}
	if root.Tag != TagResponseMessage || root.Type != TypeStructure {
		return nil, malformed(root.Tag, "message is a %v %v, not a ResponseMessage structure", root.Tag, root.Type)
	}
	if len(root.Items) == 0 || root.Items[0].Tag != TagResponseHeader || root.Items[0].Type != TypeStructure {
		return nil, malformed(TagResponseHeader, "the message does not start with a ResponseHeader structure")
	}
	hdr := &root.Items[0]
	pv, err := field(hdr, TagProtocolVersion, TypeStructure, true)
	if err != nil {
		return nil, err
	}
	r := &response{}
	if r.version, err = parseVersion(pv); err != nil {
		return nil, err
	}
	if _, err := field(hdr, TagTimeStamp, TypeDateTime, false); err != nil {
		return nil, err
	}
	bc, err := field(hdr, TagBatchCount, TypeInteger, true)
	if err != nil {
		return nil, err
	}
	n := len(root.Items) - 1
	if bc.Int < 1 || bc.Int > MaxBatchItems {
		return nil, malformed(TagBatchCount, "%d (must be 1 to %d)", bc.Int, MaxBatchItems)
	}
	if int(bc.Int) != n {
		return nil, malformed(TagBatchCount, "says %d, the message holds %d items", bc.Int, n)
	}
	for i := 1; i < len(root.Items); i++ {
		bi := &root.Items[i]
		if bi.Tag != TagBatchItem || bi.Type != TypeStructure {
			return nil, malformed(bi.Tag, "a %v in a ResponseMessage (only BatchItem structures may follow the header)", bi.Type)
		}
		it, err := parseBatchItem(bi)
		if err != nil {
			return nil, err
		}
		r.items = append(r.items, it)
	}
	return r, nil
}

// batch item fields that are allowed but not used.
const (
	tagAsyncCorrelation Tag = 0x420006
	tagMessageExtension Tag = 0x420051
)

func parseBatchItem(bi *Item) (responseItem, error) {
	var it responseItem
	for _, c := range bi.Items {
		switch c.Tag {
		case TagOperation, TagUniqueBatchItemID, TagResultStatus, TagResultReason, TagResultMessage,
			TagResponsePayload, tagAsyncCorrelation, tagMessageExtension:
		default:
			return it, malformed(c.Tag, "unexpected in a response BatchItem")
		}
	}
	f, err := field(bi, TagOperation, TypeEnumeration, false)
	if err != nil {
		return it, err
	}
	if f != nil {
		it.op = Operation(f.Int)
	}
	if f, err = field(bi, TagUniqueBatchItemID, TypeByteString, false); err != nil {
		return it, err
	}
	if f != nil {
		it.id = f.Bytes
	}
	if f, err = field(bi, TagResultStatus, TypeEnumeration, true); err != nil {
		return it, err
	}
	it.status = ResultStatus(f.Int)
	if f, err = field(bi, TagResultReason, TypeEnumeration, false); err != nil {
		return it, err
	}
	if f != nil {
		it.reason = ResultReason(f.Int)
	}
	if f, err = field(bi, TagResultMessage, TypeTextString, false); err != nil {
		return it, err
	}
	if f != nil {
		it.message = string(f.Bytes)
	}
	if it.payload, err = field(bi, TagResponsePayload, TypeStructure, false); err != nil {
		return it, err
	}
	if _, err := field(bi, tagAsyncCorrelation, TypeByteString, false); err != nil {
		return it, err
	}
	if _, err := field(bi, tagMessageExtension, TypeStructure, false); err != nil {
		return it, err
	}
	return it, nil
}

// keyObject is what a Get response says about the object it returns. The
// material aliases the response buffer.
type keyObject struct {
	uid        string
	objectType ObjectType
	format     KeyFormatType
	algorithm  Algorithm
	length     int32 // bits; 0 when absent
	material   []byte
	wrapped    bool // KeyWrappingData present, or KeyValue a byte string
	compressed bool // KeyCompressionType present
}

// parseGetPayload reads a Get response payload. A payload of another
// object type is returned with objectType set and no material.
func parseGetPayload(p *Item) (keyObject, error) {
	var k keyObject
	f, err := field(p, TagObjectType, TypeEnumeration, true)
	if err != nil {
		return k, err
	}
	k.objectType = ObjectType(f.Int)
	if f, err = field(p, TagUniqueIdentifier, TypeTextString, true); err != nil {
		return k, err
	}
	k.uid = string(f.Bytes)
	if k.objectType != ObjectSymmetricKey {
		return k, nil
	}
	sk, err := field(p, TagSymmetricKey, TypeStructure, true)
	if err != nil {
		return k, err
	}
	kb, err := field(sk, TagKeyBlock, TypeStructure, true)
	if err != nil {
		return k, err
	}
	if f, err = field(kb, TagKeyFormatType, TypeEnumeration, true); err != nil {
		return k, err
	}
	k.format = KeyFormatType(f.Int)
	if f, err = field(kb, TagKeyCompressionType, TypeEnumeration, false); err != nil {
		return k, err
	}
	k.compressed = f != nil
	if f, err = field(kb, TagCryptographicAlgorithm, TypeEnumeration, false); err != nil {
		return k, err
	}
	if f != nil {
		k.algorithm = Algorithm(f.Int)
	}
	if f, err = field(kb, TagCryptographicLength, TypeInteger, false); err != nil {
		return k, err
	}
	if f != nil {
		k.length = int32(f.Int)
	}
	if f, err = field(kb, TagKeyWrappingData, TypeStructure, false); err != nil {
		return k, err
	}
	k.wrapped = f != nil
	// KeyValue: a structure, or a byte string when the key is wrapped.
	var kv *Item
	for i := range kb.Items {
		if kb.Items[i].Tag == TagKeyValue {
			if kv != nil {
				return k, malformed(TagKeyValue, "repeated in KeyBlock")
			}
			kv = &kb.Items[i]
		}
	}
	switch {
	case kv == nil:
		return k, malformed(TagKeyValue, "missing from KeyBlock")
	case kv.Type == TypeByteString:
		k.wrapped = true
		return k, nil
	case kv.Type != TypeStructure:
		return k, malformed(TagKeyValue, "is a %v, must be a Structure or a ByteString", kv.Type)
	}
	if k.wrapped || k.compressed {
		return k, nil
	}
	var km *Item
	for i := range kv.Items {
		if kv.Items[i].Tag == TagKeyMaterial {
			if km != nil {
				return k, malformed(TagKeyMaterial, "repeated in KeyValue")
			}
			km = &kv.Items[i]
		}
	}
	if km == nil {
		return k, malformed(TagKeyMaterial, "missing from KeyValue")
	}
	switch k.format {
	case FormatRaw, FormatOpaque:
		if km.Type != TypeByteString {
			return k, malformed(TagKeyMaterial, "is a %v, must be a ByteString for %v keys", km.Type, k.format)
		}
		k.material = km.Bytes
	case FormatTransparentSymmetricKey:
		if km.Type != TypeStructure {
			return k, malformed(TagKeyMaterial, "is a %v, must be a Structure for %v keys", km.Type, k.format)
		}
		key, err := field(km, TagKey, TypeByteString, true)
		if err != nil {
			return k, err
		}
		k.material = key.Bytes
	}
	return k, nil
}

// Attributes are the attributes GetAttributes returns about a key; a zero
// field was not returned.
type Attributes struct {
	UniqueID   string
	State      State
	Algorithm  Algorithm
	Length     int32 // bits
	ObjectType ObjectType
}

// parseAttributesPayload reads a GetAttributes response payload (KMIP 1.x
// encoding: Attribute structures of AttributeName, AttributeIndex,
// AttributeValue). Attributes other than the four asked for are skipped;
// those are checked for type and repetition.
func parseAttributesPayload(p *Item) (Attributes, error) {
	var a Attributes
	f, err := field(p, TagUniqueIdentifier, TypeTextString, true)
	if err != nil {
		return a, err
	}
	a.UniqueID = string(f.Bytes)
	seen := map[string]bool{}
	for i := range p.Items {
		at := &p.Items[i]
		switch at.Tag {
		case TagUniqueIdentifier:
			continue
		case TagAttribute:
		default:
			return a, malformed(at.Tag, "unexpected in a GetAttributes response payload")
		}
		if at.Type != TypeStructure {
			return a, malformed(TagAttribute, "is a %v, must be a Structure", at.Type)
		}
		name, err := field(at, TagAttributeName, TypeTextString, true)
		if err != nil {
			return a, err
		}
		if _, err := field(at, TagAttributeIndex, TypeInteger, false); err != nil {
			return a, err
		}
		var val *Item
		for j := range at.Items {
			if at.Items[j].Tag == TagAttributeValue {
				if val != nil {
					return a, malformed(TagAttributeValue, "repeated in Attribute")
				}
				val = &at.Items[j]
			}
		}
		if val == nil {
			return a, malformed(TagAttributeValue, "missing from Attribute %s", strconv.Quote(string(name.Bytes)))
		}
		n := string(name.Bytes)
		want := TypeEnumeration
		switch n {
		case attrState, attrAlgorithm, attrObjectType:
		case attrLength:
			want = TypeInteger
		default:
			continue
		}
		if seen[n] {
			return a, malformed(TagAttribute, "%q returned twice", n)
		}
		seen[n] = true
		if val.Type != want {
			return a, malformed(TagAttributeValue, "%q is a %v, must be a %v", n, val.Type, want)
		}
		switch n {
		case attrState:
			a.State = State(val.Int)
		case attrAlgorithm:
			a.Algorithm = Algorithm(val.Int)
		case attrLength:
			a.Length = int32(val.Int)
		case attrObjectType:
			a.ObjectType = ObjectType(val.Int)
		}
	}
	return a, nil
}

// parseVersionsPayload reads a DiscoverVersions response payload.
func parseVersionsPayload(p *Item) ([]ProtocolVersion, error) {
	var vs []ProtocolVersion
	for i := range p.Items {
		c := &p.Items[i]
		if c.Tag != TagProtocolVersion || c.Type != TypeStructure {
			return nil, malformed(c.Tag, "a %v in a DiscoverVersions response (only ProtocolVersion structures)", c.Type)
		}
		v, err := parseVersion(c)
		if err != nil {
			return nil, err
		}
		vs = append(vs, v)
	}
	return vs, nil
}
