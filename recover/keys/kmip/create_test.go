package kmip

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/vmcrypt/vmcrypt/recover/keys/kmip/kmiptest"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// TestPyKMIPCreateActivate: a key made by CreateAES256 is Pre-Active (Get
// refuses it, naming the state), Active after Activate, and then the bytes
// vmcrypt's Get returns are those PyKMIP's own client Gets under the same
// Unique Identifier. Activating an id the server does not hold is Item
// Not Found (a *KeyError), and a second certificate may not Activate the
// owner's key (Permission Denied).
func TestPyKMIPCreateActivate(t *testing.T) {
	s := kmiptest.Shared(t)
	c := pyClient(t, s, nil)
	ctx := context.Background()
	uid, err := c.CreateAES256(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Get(ctx, uid)
	var ke *KeyError
	if !errors.Is(err, ErrKeyNotActive) || !errors.As(err, &ke) || ke.State != StatePreActive {
		t.Fatalf("a created key before Activate: %v, want Pre-Active", err)
	}
	if err := pyClient(t, s, s.PKI.Other).Activate(ctx, uid); !errors.Is(err, ErrPermissionDenied) {
		t.Fatalf("Activate by another certificate: %v, want Permission Denied", err)
	}
	if err := c.Activate(ctx, uid); err != nil {
		t.Fatal(err)
	}
	k, err := c.Get(ctx, uid)
	if err != nil {
		t.Fatal(err)
	}
	if want := s.Keys(t, nil, uid)[0]; !bytes.Equal(k.Material, want) {
		t.Fatal("the created key differs from PyKMIP's")
	}
	if r := s.Py(t, nil, kmiptest.Op{Op: "state", UID: uid}); r[0].State != "ACTIVE" {
		t.Fatalf("PyKMIP says the key is %q", r[0].State)
	}
	err = c.Activate(ctx, "987654321")
	if !errors.As(err, &ke) || ke.Reason != ReasonItemNotFound || !errors.Is(err, keysafe.ErrKeyNotFound) {
		t.Fatalf("Activate of a missing id: %v", err)
	}
	if err := c.Activate(ctx, ""); !errors.Is(err, keysafe.ErrKeyNotFound) {
		t.Fatalf("Activate of an empty id: %v", err)
	}
}

// TestCreatePayloadStrict: the Create and Activate answers are read
// strictly: another object type, a missing or empty id, an unknown field
// are malformed (a connection-class error, never a key).
func TestCreatePayloadStrict(t *testing.T) {
	good := Structure(TagResponsePayload, Enum(TagObjectType, uint32(ObjectSymmetricKey)), Text(TagUniqueIdentifier, "44"))
	if uid, err := parseCreatePayload(&good); err != nil || uid != "44" {
		t.Fatalf("good payload: %q, %v", uid, err)
	}
	withTemplate := Structure(TagResponsePayload, Enum(TagObjectType, uint32(ObjectSymmetricKey)), Text(TagUniqueIdentifier, "44"),
		Structure(TagTemplateAttribute))
	if uid, err := parseCreatePayload(&withTemplate); err != nil || uid != "44" {
		t.Fatalf("payload with a template: %q, %v", uid, err)
	}
	for name, p := range map[string]Item{
		"public key":   Structure(TagResponsePayload, Enum(TagObjectType, 3), Text(TagUniqueIdentifier, "44")),
		"no id":        Structure(TagResponsePayload, Enum(TagObjectType, uint32(ObjectSymmetricKey))),
		"empty id":     Structure(TagResponsePayload, Enum(TagObjectType, uint32(ObjectSymmetricKey)), Text(TagUniqueIdentifier, "")),
		"control id":   Structure(TagResponsePayload, Enum(TagObjectType, uint32(ObjectSymmetricKey)), Text(TagUniqueIdentifier, "4\n4")),
		"two ids":      Structure(TagResponsePayload, Enum(TagObjectType, uint32(ObjectSymmetricKey)), Text(TagUniqueIdentifier, "1"), Text(TagUniqueIdentifier, "2")),
		"id as bytes":  Structure(TagResponsePayload, Enum(TagObjectType, uint32(ObjectSymmetricKey)), Bytes(TagUniqueIdentifier, []byte("44"))),
		"unknown item": Structure(TagResponsePayload, Enum(TagObjectType, uint32(ObjectSymmetricKey)), Text(TagUniqueIdentifier, "44"), Integer(TagBatchCount, 1)),
	} {
		if _, err := parseCreatePayload(&p); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}
