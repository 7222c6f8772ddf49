// Package recover turns an encrypted VMware VM folder and its keys into a
// plain VM: it plans which files to read and which keys open them, and runs
// the parallel decrypting copy with temp-and-rename outputs and a report.
//
// # The plan
//
// The VMX key safe is opened with a keys.Resolver; its configKey decrypts
// encryption.data (the VM's settings), which hold the dataFileKey of the
// VM's data files and name its disks. Every link of every disk chain
// carries its own encryptionKeys locator, opened with the same Resolver.
//
// # The encrypted disk layer (MODEL, docs/formats.md §8)
//
// Disk is an io.ReaderAt over a chain: each allocated Data run held by link
// k is read from link k as stored and decrypted with link k's XTS-AES-256
// key, tweak = the virtual LBA; Zero runs and holes read as zeros and are
// never decrypted; plain links pass through.
//
// # The pipeline
//
// Copy runs N workers over the allocation map in chunks, writes with WriteAt
// (all-zero chunks, Zero runs and holes are skipped so outputs stay sparse),
// with a fixed pool of buffers, and hashes the output in order as it goes.
// Outputs are written to temporary names in the output folder and renamed
// only when complete and verified; a cancelled or failed run removes them.
// Inputs are only ever opened read-only.
//
// # Outputs and verification
//
// Plan.Run writes into a staging folder inside the output folder and
// renames every file into place only at the end, the report last. Raw
// images are verified by the sha256 computed in order as they are written
// (holes hashed as zeros, so it equals `sha256sum` of the file and of
// `qemu-img convert -O raw`). VMDK outputs (vmdk.Write) are read back
// through the VMDK reader and compared, chunk by chunk, with the decrypted
// source over the union of both allocation maps. Data files are decrypted
// by the same pipeline. recover-report.json lists every output with its
// sha256, which key source opened which locator, timings, warnings and a
// note for every modelled format the VM went through.
//
// # Errors
//
// Every key is opened in NewPlan, before anything is written: a wrong key
// is keysafe.ErrWrongKey, a key no source holds a *keysafe.KeyNotFoundError
// naming provider and key id. Damage found while copying (a grain that does
// not inflate, a data-file page MAC that fails after the VMX key proved
// right) is ErrCorrupt naming the file and offset; the staging folder is
// then removed, as on cancellation, so the output folder gets no new file.
package recover
