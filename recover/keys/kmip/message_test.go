package kmip

import (
	"bytes"
	"errors"
	"testing"
)

var testKey = bytes.Repeat([]byte{0xA5}, 32)

func TestParseGetAnswer(t *testing.T) {
	id1, id2 := []byte{0, 0, 0, 0, 0, 0, 0, 1}, []byte{0, 0, 0, 0, 0, 0, 0, 2}
	for _, transparent := range []bool{false, true} {
		k := aes256("44", testKey)
		k.transparent = transparent
		if transparent {
			k.format = FormatTransparentSymmetricKey
		}
		b := encodeT(t, respMessage(
			okItem(OpGetAttributes, id1, attrsPayloadItem("44", StateActive, AlgAES, 256)),
			okItem(OpGet, id2, getPayloadItem(k))))
		r, err := parseResponse(b)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.items) != 2 || r.version != (ProtocolVersion{1, 1}) {
			t.Fatalf("response %+v", r)
		}
		a, err := parseAttributesPayload(r.items[0].payload)
		if err != nil || a != (Attributes{UniqueID: "44", State: StateActive, Algorithm: AlgAES, Length: 256}) {
			t.Fatalf("attributes %+v, %v", a, err)
		}
		ko, err := parseGetPayload(r.items[1].payload)
		if err != nil {
			t.Fatal(err)
		}
		if ko.uid != "44" || ko.objectType != ObjectSymmetricKey || ko.algorithm != AlgAES || ko.length != 256 ||
			!bytes.Equal(ko.material, testKey) || ko.wrapped {
			t.Fatalf("transparent %v: key object %+v", transparent, ko)
		}
		if err := checkItems(r, []requestItem{{op: OpGetAttributes, id: id1}, {op: OpGet, id: id2}}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestParseRefuses: each fault of a server's answer is ErrMalformed.
func TestParseRefuses(t *testing.T) {
	good := getPayloadItem(aes256("44", testKey))
	id := []byte{0, 0, 0, 0, 0, 0, 0, 1}
	withHeader := func(h Item, items ...Item) Item {
		return Structure(TagResponseMessage, append([]Item{h}, items...)...)
	}
	drop := func(it Item, tag Tag) Item {
		var keep []Item
		for _, c := range it.Items {
			if c.Tag != tag {
				keep = append(keep, c)
			}
		}
		it.Items = keep
		return it
	}
	statusInt := okItem(OpGet, id, good)
	statusInt.Items[2] = Integer(TagResultStatus, 0)
	twice := okItem(OpGet, id, good)
	twice.Items = append(twice.Items, Enum(TagResultStatus, 0))
	unknown := okItem(OpGet, id, good)
	unknown.Items = append(unknown.Items, Text(0x420001, "x"))
	cases := map[string]Item{
		"a request, not a response": Structure(TagRequestMessage, respHeader(1), okItem(OpGet, id, good)),
		"no header":                 Structure(TagResponseMessage, okItem(OpGet, id, good)),
		"header not first":          Structure(TagResponseMessage, okItem(OpGet, id, good), respHeader(1)),
		"no protocol version":       withHeader(drop(respHeader(1), TagProtocolVersion), okItem(OpGet, id, good)),
		"no batch count":            withHeader(drop(respHeader(1), TagBatchCount), okItem(OpGet, id, good)),
		"batch count 2 for 1 item":  withHeader(respHeader(2), okItem(OpGet, id, good)),
		"batch count 0":             withHeader(respHeader(0)),
		"too many batch items":      respMessage(okItem(OpGet, id, good), okItem(OpGet, id, good), okItem(OpGet, id, good), okItem(OpGet, id, good), okItem(OpGet, id, good), okItem(OpGet, id, good), okItem(OpGet, id, good), okItem(OpGet, id, good), okItem(OpGet, id, good)),
		"result status an Integer":  respMessage(statusInt),
		"result status twice":       respMessage(twice),
		"no result status":          respMessage(drop(okItem(OpGet, id, good), TagResultStatus)),
		"unknown batch item field":  respMessage(unknown),
		"stray item in message":     withHeader(respHeader(1), okItem(OpGet, id, good), Integer(0x420001, 1)),
		"timestamp an Integer":      withHeader(Structure(TagResponseHeader, Structure(TagProtocolVersion, Integer(TagProtocolVersionMajor, 1), Integer(TagProtocolVersionMinor, 1)), Integer(TagTimeStamp, 1), Integer(TagBatchCount, 1)), okItem(OpGet, id, good)),
	}
	for name, m := range cases {
		if _, err := parseResponse(encodeT(t, m)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}

	// Payload faults.
	kb := func(items ...Item) Item {
		return Structure(TagResponsePayload, Enum(TagObjectType, uint32(ObjectSymmetricKey)), Text(TagUniqueIdentifier, "44"),
			Structure(TagSymmetricKey, Structure(TagKeyBlock, items...)))
	}
	raw := Enum(TagKeyFormatType, uint32(FormatRaw))
	payloads := map[string]Item{
		"no object type":            drop(good, TagObjectType),
		"no unique identifier":      drop(good, TagUniqueIdentifier),
		"no symmetric key":          drop(good, TagSymmetricKey),
		"no key format":             kb(Structure(TagKeyValue, Bytes(TagKeyMaterial, testKey))),
		"no key value":              kb(raw),
		"key value an Integer":      kb(raw, Integer(TagKeyValue, 1)),
		"two key values":            kb(raw, Structure(TagKeyValue, Bytes(TagKeyMaterial, testKey)), Structure(TagKeyValue, Bytes(TagKeyMaterial, testKey))),
		"no key material":           kb(raw, Structure(TagKeyValue)),
		"raw key material a Struct": kb(raw, Structure(TagKeyValue, Structure(TagKeyMaterial, Bytes(TagKey, testKey)))),
		"transparent key a String":  kb(Enum(TagKeyFormatType, uint32(FormatTransparentSymmetricKey)), Structure(TagKeyValue, Bytes(TagKeyMaterial, testKey))),
		"algorithm a TextString":    kb(raw, Structure(TagKeyValue, Bytes(TagKeyMaterial, testKey)), Text(TagCryptographicAlgorithm, "AES")),
		"length an Enumeration":     kb(raw, Structure(TagKeyValue, Bytes(TagKeyMaterial, testKey)), Enum(TagCryptographicLength, 256)),
	}
	for name, p := range payloads {
		if _, err := parseGetPayload(&p); !errors.Is(err, ErrMalformed) {
			t.Errorf("Get payload %s: err = %v, want ErrMalformed", name, err)
		}
	}
	attrs := map[string]Item{
		"no unique identifier": drop(attrsPayloadItem("44", StateActive, 0, 0), TagUniqueIdentifier),
		"state an Integer":     Structure(TagResponsePayload, Text(TagUniqueIdentifier, "44"), attrItem(attrState, Integer(0, 2))),
		"state twice":          Structure(TagResponsePayload, Text(TagUniqueIdentifier, "44"), attrItem(attrState, Enum(0, 2)), attrItem(attrState, Enum(0, 3))),
		"attribute no value":   Structure(TagResponsePayload, Text(TagUniqueIdentifier, "44"), Structure(TagAttribute, Text(TagAttributeName, attrState))),
		"attribute a String":   Structure(TagResponsePayload, Text(TagUniqueIdentifier, "44"), Text(TagAttribute, "State")),
		"stray item":           Structure(TagResponsePayload, Text(TagUniqueIdentifier, "44"), Integer(0x420001, 1)),
	}
	for name, p := range attrs {
		if _, err := parseAttributesPayload(&p); !errors.Is(err, ErrMalformed) {
			t.Errorf("GetAttributes payload %s: err = %v, want ErrMalformed", name, err)
		}
	}
}

// TestCheckItems: answers must match the request's batch items.
func TestCheckItems(t *testing.T) {
	id1, id2, other := []byte{1}, []byte{2}, []byte{9}
	req := []requestItem{{op: OpGetAttributes, id: id1}, {op: OpGet, id: id2}}
	p := attrsPayloadItem("44", StateActive, 0, 0)
	g := getPayloadItem(aes256("44", testKey))
	ok := map[string]Item{
		"both answered":                 respMessage(okItem(OpGetAttributes, id1, p), okItem(OpGet, id2, g)),
		"stopped after a failure":       respMessage(failItem(OpGetAttributes, id1, ReasonItemNotFound, "")),
		"message-level failure, no ids": respMessage(failItem(0, nil, ReasonInvalidMessage, "")),
	}
	for name, m := range ok {
		r, err := parseResponse(encodeT(t, m))
		if err != nil {
			t.Fatal(err)
		}
		if err := checkItems(r, req); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	bad := map[string]Item{
		"another request's id":       respMessage(okItem(OpGetAttributes, other, p), okItem(OpGet, id2, g)),
		"swapped":                    respMessage(okItem(OpGet, id2, g), okItem(OpGetAttributes, id1, p)),
		"wrong operation":            respMessage(okItem(OpGet, id1, p), okItem(OpGet, id2, g)),
		"missing id in a batch":      respMessage(okItem(OpGetAttributes, nil, p), okItem(OpGet, id2, g)),
		"stopped after a success":    respMessage(okItem(OpGetAttributes, id1, p)),
		"more answers than requests": respMessage(okItem(OpGetAttributes, id1, p), okItem(OpGet, id2, g), okItem(OpGet, id2, g)),
	}
	for name, m := range bad {
		r, err := parseResponse(encodeT(t, m))
		if err != nil {
			t.Fatal(err)
		}
		if err := checkItems(r, req); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

// TestRequestEncoding: a request is valid TTLV with the header, batch
// count and items in KMIP order.
func TestRequestEncoding(t *testing.T) {
	b, err := encodeRequest(ProtocolVersion{1, 2}, MaxMessageSize, []requestItem{
		{op: OpGetAttributes, id: []byte{1}, payload: getAttributesPayload("44")},
		{op: OpGet, id: []byte{2}, payload: getPayload("44")},
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if m.Tag != TagRequestMessage || len(m.Items) != 3 {
		t.Fatalf("message %v with %d items", m.Tag, len(m.Items))
	}
	h := m.Items[0]
	want := []Tag{TagProtocolVersion, TagMaximumResponseSize, TagBatchCount}
	for i, c := range h.Items {
		if c.Tag != want[i] {
			t.Fatalf("header item %d is %v, want %v", i, c.Tag, want[i])
		}
	}
	if h.Items[2].Int != 2 || h.Items[0].Items[1].Int != 2 {
		t.Fatalf("header %+v", h)
	}
	get := m.Items[2]
	if get.Items[0].Int != int64(OpGet) || string(get.Items[1].Bytes) != "\x02" ||
		string(get.Items[2].Child(TagUniqueIdentifier).Bytes) != "44" ||
		get.Items[2].Child(TagKeyFormatType).Int != int64(FormatRaw) {
		t.Fatalf("Get item %+v", get)
	}
}
