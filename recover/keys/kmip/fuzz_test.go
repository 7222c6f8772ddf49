package kmip

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzResponse feeds a hostile server's bytes to everything that reads
// them: the framing reader (readResponse), the decoder, the response and
// batch-item checks and the Get, GetAttributes, DiscoverVersions and
// Create payload readers. Every failure must be ErrMalformed (or a short read);
// a message that decodes must re-encode to the same bytes.
func FuzzResponse(f *testing.F) {
	id1, id2 := []byte{0, 0, 0, 0, 0, 0, 0, 1}, []byte{0, 0, 0, 0, 0, 0, 0, 2}
	seeds := []Item{
		respMessage(okItem(OpGetAttributes, id1, attrsPayloadItem("44", StateActive, AlgAES, 256)),
			okItem(OpGet, id2, getPayloadItem(aes256("44", testKey)))),
		respMessage(failItem(OpGetAttributes, id1, ReasonItemNotFound, "Could not locate object: 44")),
		respMessage(failItem(0, nil, ReasonAuthenticationNotSuccessful, "no")),
		respMessage(okItem(OpDiscoverVersions, id1, Structure(TagResponsePayload,
			Structure(TagProtocolVersion, Integer(TagProtocolVersionMajor, 1), Integer(TagProtocolVersionMinor, 4))))),
	}
	seeds = append(seeds, respMessage(okItem(OpCreate, id1, Structure(TagResponsePayload,
		Enum(TagObjectType, uint32(ObjectSymmetricKey)), Text(TagUniqueIdentifier, "45")))))
	tk := aes256("7", testKey[:16])
	tk.transparent, tk.format = true, FormatTransparentSymmetricKey
	seeds = append(seeds, respMessage(okItem(OpGet, id1, getPayloadItem(tk))))
	for _, s := range seeds {
		f.Add(encodeT(f, s))
	}
	f.Add(nested(20))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 64<<10 {
			return
		}
		raw, _, err := readResponse(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
				t.Fatalf("readResponse: unexpected error %v", err)
			}
			return
		}
		if len(raw) > len(b) {
			t.Fatalf("read %d bytes from %d", len(raw), len(b))
		}
		if it, err := Decode(raw); err == nil {
			again, err := Encode(it)
			if err != nil || !bytes.Equal(again, raw) {
				t.Fatalf("decoded message does not re-encode: %v", err)
			}
		}
		r, err := parseResponse(raw)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("parseResponse: unexpected error %v", err)
			}
			return
		}
		if err := checkItems(r, []requestItem{{op: OpGetAttributes, id: id1}, {op: OpGet, id: id2}}); err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("checkItems: %v", err)
		}
		for _, it := range r.items {
			if it.payload == nil {
				continue
			}
			if _, err := parseGetPayload(it.payload); err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("parseGetPayload: %v", err)
			}
			if _, err := parseAttributesPayload(it.payload); err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("parseAttributesPayload: %v", err)
			}
			if _, err := parseVersionsPayload(it.payload); err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("parseVersionsPayload: %v", err)
			}
			if _, err := parseCreatePayload(it.payload); err != nil && !errors.Is(err, ErrMalformed) {
				t.Fatalf("parseCreatePayload: %v", err)
			}
		}
	})
}
