package main

import (
	"reflect"
	"testing"

	"github.com/urfave/cli/v2"
)

func TestInterspersed(t *testing.T) {
	app := &cli.App{Commands: []*cli.Command{{
		Name: "vmx",
		Subcommands: []*cli.Command{{
			Name: "decrypt",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "output", Aliases: []string{"o"}},
				&cli.BoolFlag{Name: "force"},
			},
		}},
	}}}
	cases := []struct{ in, want []string }{
		{[]string{"vmcrypt", "vmx", "decrypt", "a.vmx", "-o", "out", "--force"},
			[]string{"vmcrypt", "vmx", "decrypt", "-o", "out", "--force", "a.vmx"}},
		{[]string{"vmcrypt", "vmx", "decrypt", "--output=x", "a.vmx", "--", "-b"},
			[]string{"vmcrypt", "vmx", "decrypt", "--output=x", "a.vmx", "--", "-b"}},
		{[]string{"vmcrypt", "vmx", "decrypt", "a.vmx", "--bogus", "b"},
			[]string{"vmcrypt", "vmx", "decrypt", "--bogus", "a.vmx", "b"}},
		{[]string{"vmcrypt", "nope", "a", "-x"}, []string{"vmcrypt", "nope", "a", "-x"}},
	}
	for _, c := range cases {
		if got := interspersed(app, c.in); !reflect.DeepEqual(got, c.want) {
			t.Errorf("interspersed(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
