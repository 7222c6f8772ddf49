package recover

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vmcrypt/vmcrypt/recover/datafile"
	"github.com/vmcrypt/vmcrypt/recover/vm"
	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmdk/outfile"
	"github.com/vmcrypt/vmcrypt/vmx"
)

// Run writes the plain VM into outDir (created if needed). Every output is
// written under a staging folder inside outDir (locked: a later run
// removes it if this one is killed), verified, and renamed into place only
// when everything is complete; on failure or cancellation the staging
// folder is removed and outDir holds no new file.
func (p *Plan) Run(ctx context.Context, outDir string) (rep *Report, err error) {
	start := time.Now()
	if err := p.checkOutDir(outDir); err != nil {
		return nil, err
	}
	createdDir := false
	if _, err := os.Stat(outDir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(outDir, 0o755); err != nil {
			return nil, err
		}
		createdDir = true
	}
	defer func() {
		if err != nil && createdDir {
			os.Remove(outDir)
		}
	}()
	for _, s := range outfile.RemoveStale(outDir) {
		p.warns = append(p.warns, fmt.Sprintf("removed %s, left by an interrupted run (it held decrypted data)", s))
	}
	if !p.opts.SkipSpaceCheck {
		if err := outfile.CheckSpace(outDir, p.NeedBytes()); err != nil {
			return nil, err
		}
	}
	stage, err := outfile.MkdirTemp(outDir, "recover")
	if err != nil {
		return nil, err
	}
	defer stage.Remove()
	rep = p.newReport(outDir, start)
	known := map[string]string{} // output name -> sha256 already known
	if err := p.runVMX(ctx, stage.Path); err != nil {
		return nil, err
	}
	for _, d := range p.disks {
		dr, err := p.runDisk(ctx, stage.Path, d, known)
		if err != nil {
			return nil, err
		}
		rep.Disks = append(rep.Disks, *dr)
	}
	for _, f := range p.files {
		fr, sum, err := p.runFile(ctx, stage.Path, f)
		if err != nil {
			return nil, err
		}
		known[f.out] = sum
		rep.DataFiles = append(rep.DataFiles, *fr)
	}
	// Every output with its sha256.
	ents, err := stage.ReadDir()
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		fp := filepath.Join(stage.Path, e.Name())
		st, err := os.Stat(fp)
		if err != nil {
			return nil, err
		}
		sum, ok := known[e.Name()]
		if !ok {
			if sum, err = hashFile(ctx, fp); err != nil {
				return nil, err
			}
		}
		rep.Outputs = append(rep.Outputs, Output{File: e.Name(), Size: st.Size(), SHA256: sum})
	}
	js, err := rep.finish(p, start)
	if err != nil {
		return nil, err
	}
	if err := writeFileCtx(ctx, filepath.Join(stage.Path, ReportName), js); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := p.publish(stage, outDir); err != nil {
		return nil, err
	}
	return rep, nil
}

// runVMX writes the plain VMX: the settings without their encryption
// lines, disks renamed to their outputs, the vTPM dropped when asked.
func (p *Plan) runVMX(ctx context.Context, stage string) error {
	dec := *p.VM.Decrypted // a copy: the VM's own settings stay as read
	dec.Settings, dec.Header = cloneVMX(dec.Settings), cloneVMX(dec.Header)
	for _, d := range p.disks {
		if d.d.FileName != d.out {
			dec.Settings.Set(d.d.Device+".fileName", d.out)
			p.warns = append(p.warns, fmt.Sprintf("%s.fileName changed from %q to %q", d.d.Device, d.d.FileName, d.out))
		}
	}
	if p.opts.DropVTPM {
		for _, f := range []*vmx.File{dec.Header, dec.Settings} {
			for _, k := range f.Keys() {
				if strings.HasPrefix(strings.ToLower(k), "vtpm.") {
					f.Delete(k)
				}
			}
		}
	}
	if p.opts.Format == FormatRaw && len(p.disks) > 0 {
		p.warns = append(p.warns, "disks were written as raw .img images; the VMX names them but VMware cannot attach raw images: convert them (qemu-img convert -O vmdk) before starting the VM")
	}
	return writeFileCtx(ctx, filepath.Join(stage, filepath.Base(p.VM.VMXPath)), dec.Recovered())
}

func cloneVMX(f *vmx.File) *vmx.File {
	return &vmx.File{Lines: append([]vmx.Line(nil), f.Lines...), BOM: f.BOM}
}

// progress returns a serialised progress callback for one output.
func (p *Plan) progress(file, phase string) vmdk.Progress {
	if p.opts.Progress == nil {
		return nil
	}
	var mu sync.Mutex
	return func(done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		p.opts.Progress(Progress{File: file, Phase: phase, Done: done, Total: total})
	}
}

// runDisk writes one disk into stage and verifies it.
func (p *Plan) runDisk(ctx context.Context, stage string, pd *plannedDisk, known map[string]string) (*DiskReport, error) {
	t0 := time.Now()
	o := &p.opts
	d := pd.d
	plain := d.Plain
	dr := &DiskReport{Device: d.Device, FileName: d.FileName, Size: plain.Size(), DataBytes: plain.DataBytes(), Links: d.Links, Output: pd.out}
	for i := range dr.Links {
		dr.Links[i].File = slash(dr.Links[i].File)
	}
	if o.Format == FormatRaw {
		f, err := os.OpenFile(filepath.Join(stage, pd.out), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := f.Truncate(plain.Size()); err != nil {
			return nil, err
		}
		sum, err := vmdk.Copy(ctx, f, plain, plain.Size(), plain.Runs(),
			&vmdk.CopyOptions{Jobs: o.Jobs, Hash: true, Progress: p.progress(pd.out, "decrypt")})
		if err != nil {
			return nil, fmt.Errorf("disk %s: %w", d.FileName, err)
		}
		if err := f.Sync(); err != nil {
			return nil, err
		}
		if err := f.Close(); err != nil {
			return nil, err
		}
		dr.ContentSHA256 = hex.EncodeToString(sum[:])
		dr.Verified = "sha256 computed in order as written"
		known[pd.out] = dr.ContentSHA256
		dr.Seconds = time.Since(t0).Seconds()
		return dr, nil
	}
	links := d.VMDK.Links()
	wopts := func(l *vmdk.Link, delta bool, name string) *vmdk.WriteOptions {
		var ddb []vmdk.Field
		for _, f := range l.Descriptor.DDB {
			if !strings.EqualFold(f.Key, "ddb.iofilters") {
				ddb = append(ddb, f)
			}
		}
		return &vmdk.WriteOptions{
			Subformat: writableSubformat(l.Descriptor.CreateType, delta),
			GrainSize: validGrain(l.GrainSize),
			CID:       l.CID,
			DDB:       ddb,
			Jobs:      o.Jobs,
			Progress:  p.progress(name, "write"),
		}
	}
	if o.Flatten {
		base := links[len(links)-1]
		w := wopts(links[0], false, pd.out)
		w.Subformat = writableSubformat(base.Descriptor.CreateType, false)
		if err := vmdk.Write(ctx, filepath.Join(stage, pd.out), plain, plain.Size(), plain.Runs(), w); err != nil {
			return nil, ctxErr(ctx, fmt.Errorf("disk %s: %w", d.FileName, err))
		}
	} else {
		var parent *vmdk.ParentInfo
		for level := len(links) - 1; level >= 0; level-- {
			l := links[level]
			name := filepath.Base(l.Path)
			w := wopts(l, parent != nil, name)
			grain := int64(0)
			if parent != nil {
				grain = w.GrainSize
				if grain == 0 {
					grain = vmdk.DefaultGrainSize
				}
			}
			view, own, err := d.LinkView(level, grain)
			if err != nil {
				return nil, err
			}
			w.Parent = parent
			if err := vmdk.Write(ctx, filepath.Join(stage, name), view, view.Size(), own, w); err != nil {
				return nil, ctxErr(ctx, fmt.Errorf("disk %s link %s: %w", d.FileName, l.Path, err))
			}
			parent = &vmdk.ParentInfo{CID: l.CID, FileNameHint: name}
		}
	}
	// Verify: the written disk, read back through the vmdk reader, must
	// equal the decrypted source byte for byte.
	sum, err := p.verify(ctx, filepath.Join(stage, pd.out), plain, pd.out)
	if err != nil {
		return nil, fmt.Errorf("disk %s: %w", d.FileName, err)
	}
	dr.ContentSHA256 = hex.EncodeToString(sum[:])
	dr.Verified = "read back through the VMDK reader and compared with the decrypted source"
	dr.Seconds = time.Since(t0).Seconds()
	return dr, nil
}

// validGrain returns g when vmdk.Write accepts it as a grain, else 0
// (the default).
func validGrain(g int64) int64 {
	if g >= 4096 && g <= vmdk.MaxWriteGrainSize && g&(g-1) == 0 {
		return g
	}
	return 0
}

// ErrVerify means a written output does not read back as its source.
var ErrVerify = vmdk.ErrVerify

// verify opens the written disk and compares it with src over the union of
// both allocation maps, returning the sha256 of the content.
func (p *Plan) verify(ctx context.Context, path string, src *vm.PlainDisk, name string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	out, err := vmdk.Open(path, nil)
	if err != nil {
		return sum, fmt.Errorf("%s: reading back: %w: %w", name, ErrVerify, err)
	}
	defer out.Close()
	if out.Size() != src.Size() {
		return sum, fmt.Errorf("%s: size %d, source %d: %w", name, out.Size(), src.Size(), ErrVerify)
	}
	oruns, err := out.Allocated()
	if err != nil {
		return sum, fmt.Errorf("%s: %w: %w", name, ErrVerify, err)
	}
	return vmdk.Copy(ctx, nil, src, src.Size(), vmdk.UnionRuns(src.Runs(), oruns),
		&vmdk.CopyOptions{Jobs: p.opts.Jobs, Compare: out, Hash: true, Progress: p.progress(name, "verify")})
}

// dataFileChunk is the copy chunk for data files: 256 whole pages of
// plaintext (a multiple of 512 bytes).
const dataFileChunk = 256 * datafile.DataPerPage

// runFile writes one data file (decrypted) or small plain file (copied).
func (p *Plan) runFile(ctx context.Context, stage string, pf *plannedFile) (*FileReport, string, error) {
	df := pf.df
	fr := &FileReport{File: slash(df.Path), Output: pf.out, Encrypted: df.Encrypted, Size: df.Size, MAC: df.MAC}
	in, err := df.Open()
	if err != nil {
		return nil, "", err
	}
	defer in.Close()
	out, err := os.OpenFile(filepath.Join(stage, pf.out), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, "", err
	}
	defer out.Close()
	if err := out.Truncate(in.Size()); err != nil {
		return nil, "", err
	}
	// Decrypted (or copied) by the parallel engine: chunks of whole pages,
	// zero blocks left as holes, sha256 in order.
	s, err := vmdk.Copy(ctx, out, in, in.Size(), []vmdk.Run{{Off: 0, Len: in.Size(), State: vmdk.Data}},
		&vmdk.CopyOptions{Jobs: p.opts.Jobs, ChunkSize: dataFileChunk, Hash: true, Progress: p.progress(pf.out, "decrypt")})
	if err != nil {
		return nil, "", err
	}
	if err := out.Sync(); err != nil {
		return nil, "", err
	}
	if err := out.Close(); err != nil {
		return nil, "", err
	}
	return fr, hex.EncodeToString(s[:]), nil
}

// ctxErr prefers the context's error when it is done (a writer may wrap a
// cancelled read in its own words).
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

// writeFileCtx writes a small file.
func writeFileCtx(ctx context.Context, path string, b []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// hashFile returns the sha256 (hex) of a file.
func hashFile(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	sum, err := vmdk.Copy(ctx, nil, f, st.Size(), []vmdk.Run{{Off: 0, Len: st.Size(), State: vmdk.Data}}, &vmdk.CopyOptions{Jobs: 1, Hash: true})
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(sum[:]), nil
}
