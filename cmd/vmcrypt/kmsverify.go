package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

// `kms verify DIR...`: for every VM under the folders, does the KMS hold,
// Active, every key its key safe and disks name, and does each open? One
// row per VM; the KMS is asked once per distinct key id, over one
// connection.

// kmsStats is what the KMS was asked.
type kmsStats struct {
	Servers     []string `json:"servers"`
	Provider    string   `json:"provider,omitempty"`
	KeysAsked   int64    `json:"keysAsked"`   // distinct key ids asked (Gets)
	RoundTrips  int64    `json:"roundTrips"`  // requests answered
	Connections int64    `json:"connections"` // TLS connections opened
}

func kmsStatsOf(run *kmipRun) kmsStats {
	st := run.client.Stats()
	return kmsStats{Servers: run.client.Servers(), Provider: run.src.Provider(), KeysAsked: run.src.Gets(),
		RoundTrips: st.RoundTrips, Connections: st.Dials}
}

func kmsVerify(c *cli.Context) error {
	args := c.Args().Slice()
	if len(args) == 0 {
		return usagef("kms verify needs at least one DIR (a datastore, a VM folder or a .vmx)")
	}
	run, err := kmsNeedRun(c)
	if err != nil {
		return err
	}
	vmxs, rows := kmsVMXs(c, args)
	for _, p := range vmxs {
		r, err := kmsCheckVM(c, p, run, nil)
		if err != nil {
			return fmt.Errorf("kms verify stopped at %s (%d of %d VMs checked): %w", p, len(rows), len(vmxs), err)
		}
		rows = append(rows, r)
	}
	var worst error
	failed, checked := 0, 0
	for i := range rows {
		r := &rows[i]
		kmsFinish(r)
		if r.Checked {
			checked++
		}
		if r.err != nil {
			failed++
			if worst == nil || exitRank(r.err) > exitRank(worst) {
				worst = r.err
			}
		}
	}
	stats := kmsStatsOf(run)
	if c.Bool("json") {
		if err := nkpWriteJSON(c.App.Writer, struct {
			KMS kmsStats       `json:"kms"`
			VMs []kmsVerifyRow `json:"vms"`
		}{stats, rows}); err != nil {
			return err
		}
	} else if err := kmsPrintVerify(c.App.Writer, stats, rows, checked, failed); err != nil {
		return err
	}
	if worst == nil {
		return nil
	}
	return &summaryError{msg: fmt.Sprintf("%d of %d VMs the KMS locks do not open with it (see the table)", failed, checked), err: worst}
}

func kmsPrintVerify(w io.Writer, st kmsStats, rows []kmsVerifyRow, checked, failed int) error {
	fmt.Fprintf(w, "KMS %v", st.Servers)
	if st.Provider != "" {
		fmt.Fprintf(w, " (key provider %q)", st.Provider)
	}
	fmt.Fprintf(w, ": %d key ids asked, %d round trips, %d connection(s)\n", st.KeysAsked, st.RoundTrips, st.Connections)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VM\tSTATUS\tKEY IDS\tDETAIL")
	for _, r := range rows {
		detail := r.Detail
		if r.err != nil {
			detail = strings.TrimPrefix(message(r.err), r.VM+": ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.VM, r.Status, kmsKeyIDs(r), detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d VMs: %d locked by this KMS, %d of them open; %d not checked (plain, passphrase or other key providers)\n",
		len(rows), checked, checked-failed, len(rows)-checked)
	return err
}
