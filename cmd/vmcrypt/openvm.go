package main

import (
	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/recover/keys"
	"github.com/vmcrypt/vmcrypt/recover/vm"
	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// Every command that reads a VM opens it here, through vm.OpenVM: the key
// options become one resolver, the VMDK flags (where the command has them)
// become vmdk.OpenOptions, and the command's context (cancelled by
// SIGINT/SIGTERM) bounds the work.

// vmOpenMode says how a command opens a VM.
type vmOpenMode struct {
	depth     vm.Depth
	keepGoing bool
	// noKeys opens the VM locked (no key options read): inspect without
	// keys, vmx hash.
	noKeys bool
	// prompt asks for a passphrase on a terminal when no key option was
	// given and the key safe has a passphrase pair.
	prompt bool
	// ignoreMAC, from --ignore-mac where the command has it.
	ignoreMAC bool
	// optionalKeys opens the VM locked when no key option was given
	// (inspect).
	optionalKeys bool
}

// vmOpen opens the VM at path for command c.
func vmOpen(c *cli.Context, path string, m vmOpenMode) (*vm.VM, error) {
	o := &vm.Options{Depth: m.depth, KeepGoing: m.keepGoing, VMDK: vmdkOpenOptions(c), IgnoreMAC: m.ignoreMAC || c.Bool("ignore-mac"), StrictMAC: c.Bool("strict-mac")}
	if !m.noKeys {
		prompt := false
		if m.prompt {
			// Ask for a passphrase only for a VM a passphrase opens; a
			// key-provider VM without its key fails naming the key (exit 4).
			locked, err := vm.OpenVM(c.Context, path, &vm.Options{Depth: vm.SettingsOnly})
			if err != nil {
				return nil, err
			}
			prompt = hasPhrasePair(locked.KeySafe)
			locked.Close()
		}
		srcs, err := keySources(c, prompt)
		if err != nil {
			return nil, err
		}
		if len(srcs) > 0 || !m.optionalKeys {
			o.Resolver = keys.NewResolver(srcs...)
		}
	}
	return vm.OpenVM(c.Context, path, o)
}

// hasPhrasePair reports whether a key safe can be opened by a passphrase.
func hasPhrasePair(l *keysafe.Locator) bool {
	if l == nil {
		return false
	}
	for _, p := range l.Pairs() {
		if p.Locker != nil && p.Locker.Type == keysafe.TypePhrase {
			return true
		}
	}
	return false
}

// vmdkOpenOptions reads the VMDK flags a command may have.
func vmdkOpenOptions(c *cli.Context) *vmdk.OpenOptions {
	return &vmdk.OpenOptions{
		AllowUnsafePaths:     c.Bool("allow-unsafe-paths"),
		AllowCIDMismatch:     c.Bool("allow-cid-mismatch"),
		ScanTruncatedStreams: c.Bool("scan-truncated-stream"),
	}
}
