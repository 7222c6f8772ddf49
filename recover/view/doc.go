// Package view is the one read-only, decrypted view of an opened VM that
// `vmcrypt mount` (FUSE, package recover/mount) and `vmcrypt serve` (NBD,
// package recover/nbd) show: a list of named files, each with an exact size,
// its bytes as an io.ReaderAt safe for concurrent use, and an allocation
// map. Nothing is decrypted until a file is read, and nothing is ever
// written.
//
// # The files
//
// New builds the list from a *vm.VM (vm.OpenVM with its keys, Depth Full):
//
//   - DISK.raw for each disk: the whole chain flattened, as the VM shows it
//     now. DISK is the file name of the chain's base link without its
//     extension (fixture.vmdk -> fixture.raw), so that taking a snapshot
//     does not rename the disk; two disks with the same base name get the
//     device appended (fixture_scsi0-1.raw).
//   - DISK@N.raw for each snapshot state of a chain of more than one link:
//     the disk as parent link k shows it (vm.OpenedDisk.LinkView(k, 0)),
//     what the disk held when that snapshot was taken. N is the uid of
//     the snapshot in the VM's .vmsd that names the link's file for the
//     disk's device; when the .vmsd does not name every parent link (or is
//     missing), N counts the links from the base: DISK@1 is the base link
//     alone, DISK@2 the base with the next link, and so on.
//   - NAME.vmx: the decrypted VMX, as `vmcrypt vmx decrypt` writes it (the
//     plain header lines, then the decrypted settings).
//   - the VM's data files, decrypted, under their names in the folder
//     (.nvram, .vswp, .vmsn, .vmss, .vmem; plain .vmsd and .vmxf as they
//     are). Memory images (a flat NAME.vmem and its state file) plug in
//     at memoryFiles; until recover/memory is merged a .vmem shows as its
//     decrypted container payload.
//   - report.json: what opened what (the key safe's locker and source,
//     each disk link's locker and source, the file each view reads), the
//     VM's warnings and the modelled formats it went through.
//
// Names are the same on every front end: the NBD export of a disk is the
// name of its file in the mount (Exports, MountFiles).
//
// # Allocation maps
//
// Disk files carry the chain's map (vmdk.Run: Data and Zero runs, holes
// not listed). The FUSE files list only the Data runs as allocated, so
// holes and zeroed grains read as zeros without decrypting and
// SEEK_DATA/SEEK_HOLE skip them; NBD base:allocation reports holes as
// HOLE|ZERO and zeroed grains as ZERO, and structured reads send both as
// hole chunks without reading them.
//
// # Errors
//
// New fails only on what a caller cannot serve around: a data file that
// cannot be opened, or two files that would share a name. Reads of a
// damaged range fail for that range only (the error names the file and
// offset); the front ends log them and go on.
package view
