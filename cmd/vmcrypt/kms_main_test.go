package main

import (
	"testing"

	"github.com/vmcrypt/vmcrypt/recover/keys/kmip/kmiptest"
)

// TestMain stops the PyKMIP server the kms tests share (kmiptest.Shared)
// when the binary's tests end.
func TestMain(m *testing.M) { kmiptest.Main(m) }
