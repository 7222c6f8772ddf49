package kmip

import "context"

// Create and Activate: the two operations vCenter sends to make a new
// key-encryption key (docs/formats.md §14), for `vmcrypt fixture --kmip`
// (a demo VM locked by a key a real KMS holds). Recovery never sends them.

// TagTemplateAttribute is the TemplateAttribute structure of a Create
// request (KMIP 1.x §2.1.8).
const TagTemplateAttribute Tag = 0x420091

// Cryptographic Usage Mask bits (KMIP 1.x §9.1.3.3.1).
const (
	usageEncrypt = 0x04
	usageDecrypt = 0x08
)

// attribute names sent by Create.
const attrUsageMask = "Cryptographic Usage Mask"

func attribute(name string, value Item) Item {
	value.Tag = TagAttributeValue
	return Structure(TagAttribute, Text(TagAttributeName, name), value)
}

func createAES256Payload() Item {
	return Structure(TagRequestPayload,
		Enum(TagObjectType, uint32(ObjectSymmetricKey)),
		Structure(TagTemplateAttribute,
			attribute(attrAlgorithm, Enum(0, uint32(AlgAES))),
			attribute(attrLength, Integer(0, 256)),
			attribute(attrUsageMask, Integer(0, usageEncrypt|usageDecrypt)),
		))
}

func uidPayload(uid string) Item {
	return Structure(TagRequestPayload, Text(TagUniqueIdentifier, uid))
}

// parseCreatePayload reads a Create response payload: the object type
// (a symmetric key) and the new object's Unique Identifier. A
// TemplateAttribute the server may add is allowed and ignored.
func parseCreatePayload(p *Item) (string, error) {
	for _, c := range p.Items {
		switch c.Tag {
		case TagObjectType, TagUniqueIdentifier, TagTemplateAttribute:
		default:
			return "", malformed(c.Tag, "unexpected in a Create response payload")
		}
	}
	ot, err := field(p, TagObjectType, TypeEnumeration, true)
	if err != nil {
		return "", err
	}
	if ObjectType(ot.Int) != ObjectSymmetricKey {
		return "", malformed(TagObjectType, "Create made a %v, not the symmetric key asked for", ObjectType(ot.Int))
	}
	if _, err := field(p, TagTemplateAttribute, TypeStructure, false); err != nil {
		return "", err
	}
	return parseUID(p)
}

// parseUID reads the one Unique Identifier of a response payload and
// checks that it can name an object.
func parseUID(p *Item) (string, error) {
	f, err := field(p, TagUniqueIdentifier, TypeTextString, true)
	if err != nil {
		return "", err
	}
	uid := string(f.Bytes)
	if err := validID(uid); err != nil {
		return "", malformed(TagUniqueIdentifier, "%v", err)
	}
	return uid, nil
}

// CreateAES256 asks the server to create an AES-256 symmetric key (usage
// Encrypt and Decrypt), as vCenter does, and returns its Unique
// Identifier. The key starts Pre-Active: Activate it before Get returns it.
// Errors as for Get: a *ResultError or *KeyError the server answered, a
// *ConnError or *ClusterError when no server answered properly.
func (c *Client) CreateAES256(ctx context.Context) (string, error) {
	r, server, raw, err := c.do(ctx, []requestItem{{op: OpCreate, payload: createAES256Payload()}})
	defer clear(raw)
	if err != nil {
		return "", err
	}
	it := &r.items[0]
	if it.status != StatusSuccess {
		return "", c.failure(server, OpCreate, "", it)
	}
	if it.payload == nil {
		return "", c.connErr(server, malformed(TagResponsePayload, "missing from a successful Create"), true)
	}
	uid, err := parseCreatePayload(it.payload)
	if err != nil {
		return "", c.connErr(server, err, true)
	}
	return uid, nil
}

// Activate makes the object uid Active (its state goes from Pre-Active to
// Active). Errors as for Get (a *KeyError for Item Not Found or
// Permission Denied).
func (c *Client) Activate(ctx context.Context, uid string) error {
	if err := validID(uid); err != nil {
		return badID(uid, err)
	}
	r, server, raw, err := c.do(ctx, []requestItem{{op: OpActivate, payload: uidPayload(uid)}})
	defer clear(raw)
	if err != nil {
		return err
	}
	it := &r.items[0]
	if it.status != StatusSuccess {
		return c.failure(server, OpActivate, uid, it)
	}
	if it.payload == nil {
		return c.connErr(server, malformed(TagResponsePayload, "missing from a successful Activate"), true)
	}
	got, err := parseUID(it.payload)
	if err != nil {
		return c.connErr(server, err, true)
	}
	if got != uid {
		return c.connErr(server, malformed(TagUniqueIdentifier, "Activate answered about %q, not %q", got, uid), true)
	}
	return nil
}
