// Package vm opens a VMware VM folder, once, for every command: OpenVM
// walks the .vmx, its key safe, the settings in encryption.data, every disk
// chain with the key of each link, and the data files, and returns a VM: a
// read-only view whose disks are concurrent io.ReaderAt with allocation
// maps and whose data files open as io.ReaderAt. recover, mount, serve,
// memory, inspect, unlock, nkp verify and kms verify are views over it.
//
// # The walk
//
// The VMX key safe is opened with a keys.Resolver; its configKey decrypts
// encryption.data (the VM's settings), which hold the dataFileKey of the
// VM's data files and name its disks. Every link of every disk chain
// carries its own encryptionKeys locator, opened with the same Resolver
// (so a passphrase is derived once per salt). Nothing is decrypted beyond
// the settings until a disk or data file is read.
//
// # The encrypted disk layer (MODEL, docs/formats.md §8)
//
// PlainDisk is an io.ReaderAt over a chain: each allocated Data run held by
// link k is read from link k as stored and decrypted with link k's
// XTS-AES-256 key, tweak = the virtual LBA; Zero runs and holes read as
// zeros and are never decrypted; plain links pass through.
//
// # Errors
//
// A wrong key is keysafe.ErrWrongKey, a key no source holds a
// *keysafe.KeyNotFoundError naming provider and key id, damage
// keysafe.ErrCorrupt or vmdk.ErrCorrupt naming file, offset and field; a
// folder without a .vmx ErrNoVMX. With Options.KeepGoing a disk or data
// file that fails is kept with its error, so that a report can list them
// all.
package vm
