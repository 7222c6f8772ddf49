package kmip

import (
	"testing"
)

// Builders of server answers for tests (what a KMIP 1.x server sends).

func respHeader(n int) Item {
	return Structure(TagResponseHeader,
		Structure(TagProtocolVersion, Integer(TagProtocolVersionMajor, 1), Integer(TagProtocolVersionMinor, 1)),
		Item{Tag: TagTimeStamp, Type: TypeDateTime, Int: 1700000000},
		Integer(TagBatchCount, int32(n)))
}

// respMessage wraps batch items in a ResponseMessage.
func respMessage(items ...Item) Item {
	return Structure(TagResponseMessage, append([]Item{respHeader(len(items))}, items...)...)
}

func encodeT(t testing.TB, it Item) []byte {
	t.Helper()
	b, err := Encode(it)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// okItem is a successful batch item.
func okItem(op Operation, id []byte, payload Item) Item {
	bi := Structure(TagBatchItem, Enum(TagOperation, uint32(op)))
	if id != nil {
		bi.Items = append(bi.Items, Bytes(TagUniqueBatchItemID, id))
	}
	bi.Items = append(bi.Items, Enum(TagResultStatus, uint32(StatusSuccess)), payload)
	return bi
}

// failItem is a failed batch item (op 0 and id nil: a message-level error).
func failItem(op Operation, id []byte, reason ResultReason, msg string) Item {
	bi := Structure(TagBatchItem)
	if op != 0 {
		bi.Items = append(bi.Items, Enum(TagOperation, uint32(op)))
	}
	if id != nil {
		bi.Items = append(bi.Items, Bytes(TagUniqueBatchItemID, id))
	}
	bi.Items = append(bi.Items, Enum(TagResultStatus, uint32(StatusOperationFailed)),
		Enum(TagResultReason, uint32(reason)), Text(TagResultMessage, msg))
	return bi
}

// keySpec describes a Get answer.
type keySpec struct {
	uid         string
	objectType  ObjectType
	format      KeyFormatType
	alg         Algorithm
	length      int32
	material    []byte
	wrapped     bool
	transparent bool
}

func aes256(uid string, key []byte) keySpec {
	return keySpec{uid: uid, objectType: ObjectSymmetricKey, format: FormatRaw, alg: AlgAES, length: 256, material: key}
}

func getPayloadItem(k keySpec) Item {
	p := Structure(TagResponsePayload, Enum(TagObjectType, uint32(k.objectType)), Text(TagUniqueIdentifier, k.uid))
	if k.objectType != ObjectSymmetricKey {
		return p
	}
	material := Bytes(TagKeyMaterial, k.material)
	if k.transparent {
		material = Structure(TagKeyMaterial, Bytes(TagKey, k.material))
	}
	kb := Structure(TagKeyBlock, Enum(TagKeyFormatType, uint32(k.format)), Structure(TagKeyValue, material))
	if k.alg != 0 {
		kb.Items = append(kb.Items, Enum(TagCryptographicAlgorithm, uint32(k.alg)))
	}
	if k.length != 0 {
		kb.Items = append(kb.Items, Integer(TagCryptographicLength, k.length))
	}
	if k.wrapped {
		kb.Items = append(kb.Items, Structure(TagKeyWrappingData, Enum(0x42009E, 1)))
	}
	p.Items = append(p.Items, Structure(TagSymmetricKey, kb))
	return p
}

func attrItem(name string, v Item) Item {
	v.Tag = TagAttributeValue
	return Structure(TagAttribute, Text(TagAttributeName, name), v)
}

func attrsPayloadItem(uid string, state State, alg Algorithm, length int32) Item {
	p := Structure(TagResponsePayload, Text(TagUniqueIdentifier, uid))
	if state != 0 {
		p.Items = append(p.Items, attrItem(attrState, Enum(0, uint32(state))))
	}
	if alg != 0 {
		p.Items = append(p.Items, attrItem(attrAlgorithm, Enum(0, uint32(alg))))
	}
	if length != 0 {
		p.Items = append(p.Items, attrItem(attrLength, Integer(0, length)))
	}
	return p
}
