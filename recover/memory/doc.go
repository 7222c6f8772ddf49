// Package memory reads and writes the memory of VMware checkpoints
// (snapshots and suspends): the .vmem block container and its LZ77 codec,
// the checkpoint state file (.vmsn/.vmss) tag-group format with its
// `memory` group, and the guest-physical view the two make together
// (docs/formats.md §13).
//
// # The .vmem container (PUBLIC: vmem-decrypt docs/FORMAT.md)
//
// VMware compresses a checkpoint's .vmem before it encrypts it (§9). The
// decrypted file is a sequence of blocks:
//
//	u32 uncompressedSize (0x400000 for full blocks) | u32 0 |
//	u32 compressedSize | u32 0 | stream[compressedSize]
//
// compressedSize == uncompressedSize stores the block raw. Otherwise the
// stream is a byte-oriented LZ77 without entropy coding whose window is
// continuous over the whole file (references cross block boundaries, up to
// MaxDistance bytes back, and read zeros before the start of the file).
// The grammar is FastLZ level 2's (ariya/FastLZ): the first control byte's
// top three bits are FastLZ's level marker, 1 for level 2, which vmcrypt's
// Writer sets. docs/formats.md §13 and vmem_flatten.py read a marker of 0 (FastLZ
// level 1) with the same grammar; FastLZ's level 1 differs only for a match
// at distance exactly 8192 (control low bits 0x1f, distance byte 0xff),
// which level 2 reads as a distance escape. vmcrypt follows §13 and the
// peer. The continuous window and the zeros before the start are VMware's.
// FlatReader decodes with bounded memory, FlattenConcurrent puts
// decryption and decompression on a core each, RandomFlat serves random
// reads (mount, serve); Writer encodes (fixtures).
//
// # Checkpoint state files (PUBLIC: Volatility, crash's vmware_vmss.c)
//
// See checkpoint.go: a header, a table of named groups, and per group a
// stream of tags; the `memory` group maps the flat memory file to guest
// physical pages (Regions). Physical lays the flat file out by them.
//
// # Errors
//
// Malformed input is an *Error wrapping keysafe.ErrCorrupt (or
// keysafe.ErrUnsupported for well-formed input vmcrypt does not handle),
// naming the file, the input offset and the field. I/O errors pass through
// wrapped. Nothing here prints.
package memory
