package recover

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/vmcrypt/vmcrypt/vmdk/outfile"
)

// ErrOutputExists means an output file exists and Force is not set.
var ErrOutputExists = errors.New("output exists")

// ErrOutputIsInput means the output folder is a folder that holds inputs
// (the VM folder, or a folder of a disk's file): refused even with Force,
// for it would replace the encrypted originals.
var ErrOutputIsInput = errors.New("the output folder holds the inputs")

// ErrNoSpace means the output folder lacks the space the outputs need.
var ErrNoSpace = outfile.ErrNoSpace

// rename moves a file into place (a variable so that tests can make a
// publish fail half-way).
var rename = os.Rename

// inputDirs returns the folders the plan reads from: those of every input
// file, and of the file each symbolic link among them points to.
func (p *Plan) inputDirs() []string {
	paths := []string{p.VM.VMXPath}
	for _, d := range p.disks {
		for _, l := range d.d.VMDK.Links() {
			paths = append(paths, l.Path)
			for _, e := range l.Extents {
				if e.Path != "" {
					paths = append(paths, e.Path)
				}
			}
		}
	}
	for _, f := range p.files {
		paths = append(paths, f.df.Path)
	}
	dirs := []string{p.VM.Dir}
	for _, path := range paths {
		dirs = append(dirs, filepath.Dir(path))
		if real, err := filepath.EvalSymlinks(path); err == nil {
			dirs = append(dirs, filepath.Dir(real))
		}
	}
	return dirs
}

// checkOutDir refuses an output folder that is one of the input folders,
// and outputs that exist (unless Force).
func (p *Plan) checkOutDir(outDir string) error {
	return checkOutputs(outDir, p.inputDirs(), p.outputs, p.opts.Force)
}

// checkOutputs refuses an output folder that is one of inputDirs, and
// outputs (names in outDir) that exist unless force.
func checkOutputs(outDir string, inputDirs, outputs []string, force bool) error {
	if ost, err := os.Stat(outDir); err == nil {
		for _, d := range inputDirs {
			if st, err := os.Stat(d); err == nil && os.SameFile(ost, st) {
				return fmt.Errorf("%s is %s, where the encrypted inputs are: choose another output folder: %w", outDir, d, ErrOutputIsInput)
			}
		}
	}
	for _, name := range outputs {
		st, err := os.Lstat(filepath.Join(outDir, name))
		switch {
		case err != nil:
		case st.IsDir():
			return fmt.Errorf("%s is a folder where an output file goes: move it away: %w", filepath.Join(outDir, name), ErrOutputExists)
		case !force:
			return fmt.Errorf("%s already exists (replace it with force): %w", filepath.Join(outDir, name), ErrOutputExists)
		}
	}
	return nil
}

// publish renames every staged file into outDir, the report last. A file
// being replaced (Force) is first moved aside into the staging folder and
// put back if a later rename fails, so that a failure leaves the previous
// recovery as it was.
func (p *Plan) publish(stage *outfile.Dir, outDir string) error {
	return publishStage(stage, outDir, p.opts.Force, ReportName)
}

// publishStage renames every file of stage into outDir, the report
// (named report) last, as Plan.publish does.
func publishStage(stage *outfile.Dir, outDir string, force bool, report string) error {
	ents, err := stage.ReadDir()
	if err != nil {
		return err
	}
	sort.SliceStable(ents, func(i, j int) bool { return ents[j].Name() == report && ents[i].Name() != report })
	aside := filepath.Join(stage.Path, ".replaced")
	type moved struct{ dst, aside string }
	var done []string
	var setAside []moved
	undo := func() {
		for _, d := range done {
			os.Remove(d)
		}
		for _, m := range setAside {
			rename(m.aside, m.dst)
		}
	}
	for _, e := range ents {
		dst := filepath.Join(outDir, e.Name())
		if st, err := os.Lstat(dst); err == nil {
			if !force || st.IsDir() {
				undo()
				return fmt.Errorf("%s appeared while recovering: %w", dst, ErrOutputExists)
			}
			if len(setAside) == 0 {
				if err := os.Mkdir(aside, 0o700); err != nil {
					undo()
					return err
				}
			}
			m := moved{dst, filepath.Join(aside, e.Name())}
			if err := rename(dst, m.aside); err != nil {
				undo()
				return fmt.Errorf("moving the old %s aside: %w", dst, err)
			}
			setAside = append(setAside, m)
		}
		if err := rename(filepath.Join(stage.Path, e.Name()), dst); err != nil {
			undo()
			return fmt.Errorf("moving %s into place: %w", dst, err)
		}
		done = append(done, dst)
	}
	outfile.SyncDir(outDir)
	return nil
}
