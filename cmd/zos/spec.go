package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/zosgrid/zos/internal/key"
	"github.com/zosgrid/zos/internal/spec"
)

func specCmd() *cobra.Command {
	c := &cobra.Command{Use: "spec", Short: "Check deployment specs (docs/SPEC.md)"}
	var keysFile string
	var asJSON bool
	check := &cobra.Command{
		Use:   "check SPEC",
		Short: "Validate a deployment spec; print its challenge and signature status",
		Long: `Validate a deployment spec (YAML or JSON), print its challenge and which
signature requests are met. With --keys FILE (lines "TWIN ed25519:..."), each
signature is checked against its twin's key and the exit status is 3 when the
requirement is not met; without it, signatures are checked against the keys
they declare, which says nothing about who made them.`,
		Args: usageArgs(1, "one SPEC file"),
		RunE: func(c *cobra.Command, args []string) error {
			d, err := readSpec(args[0])
			if err != nil {
				return err
			}
			var res spec.Result
			var verr error
			if keysFile != "" {
				keys, err := readKeys(keysFile)
				if err != nil {
					return &exitError{exitUsage, err}
				}
				res, verr = spec.Verify(d, keys)
			} else {
				res, verr = spec.VerifyDeclared(d)
			}
			if verr != nil && !errors.Is(verr, spec.ErrSignature) {
				return verr
			}
			printCheck(c.OutOrStdout(), d, res, keysFile, asJSON)
			if verr != nil && keysFile != "" {
				return &exitError{exitSignature, verr}
			}
			return nil
		},
	}
	check.Flags().StringVar(&keysFile, "keys", "", `twins' public keys, one "TWIN ed25519:..." per line`)
	check.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")

	var strip bool
	canonical := &cobra.Command{
		Use:   "canonical SPEC",
		Short: "Print a spec's canonical form (--strip: without signatures, the bytes the challenge hashes)",
		Args:  usageArgs(1, "one SPEC file"),
		RunE: func(c *cobra.Command, args []string) error {
			d, err := readSpec(args[0])
			if err != nil {
				return err
			}
			var b []byte
			if strip {
				b, err = d.Stripped()
			} else {
				b, err = d.Canonical()
			}
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(c.OutOrStdout(), "%s\n", b)
			return err
		},
	}
	canonical.Flags().BoolVar(&strip, "strip", false, "leave out the signatures")
	c.AddCommand(check, canonical)
	return c
}

func specSignCmd() *cobra.Command {
	var keyFile, out string
	var twin uint32
	c := &cobra.Command{
		Use:   "sign SPEC --key K --twin ID [-o OUT]",
		Short: "Add (or renew) a twin's signature to a deployment spec, keeping the others",
		Long: `Sign a deployment spec's challenge with the secret key K as twin ID and add
the signature to the file (in place unless -o; "-o -" writes to standard
output). An earlier signature of the same twin and key is replaced; every other
signature is kept. The spec must be valid and list the twin in its signature
requirement.`,
		Args: usageArgs(1, "one SPEC file"),
		RunE: func(c *cobra.Command, args []string) error {
			if keyFile == "" || twin == 0 {
				return &exitError{exitUsage, errors.New("sign needs --key FILE and --twin ID")}
			}
			sec, err := key.Load(keyFile)
			if err != nil {
				return err
			}
			in, err := readFile(args[0])
			if err != nil {
				return err
			}
			signed, err := spec.Cosign(in, sec, twin)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			switch out {
			case "-":
				_, err = c.OutOrStdout().Write(signed)
				return err
			case "":
				out = args[0]
			}
			if err := writeAtomic(out, signed); err != nil {
				return err
			}
			fmt.Fprintf(c.ErrOrStderr(), "signed %s as twin %d (%s)\n", out, twin, sec.Public())
			return nil
		},
	}
	c.Flags().StringVar(&keyFile, "key", "", "secret key file (zos key gen)")
	c.Flags().Uint32Var(&twin, "twin", 0, "twin id to sign as")
	c.Flags().StringVarP(&out, "output", "o", "", `write the signed spec here ("-": standard output; default: in place)`)
	return c
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, spec.MaxInput+1))
	if err != nil {
		return nil, err
	}
	return b, nil
}

func readSpec(path string) (*spec.Deployment, error) {
	b, err := readFile(path)
	if err != nil {
		return nil, err
	}
	d, err := spec.Parse(b)
	if err != nil {
		// Several problems come one per line: indent them under the file.
		return nil, fmt.Errorf("%s: %s", path, strings.ReplaceAll(err.Error(), "\n", "\n  "))
	}
	return d, nil
}

// readKeys reads a twins' keys file (spec.ParseKeys).
func readKeys(path string) (map[uint32]key.Public, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	keys, err := spec.ParseKeys(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return keys, nil
}

func writeAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".zos-sign-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

type checkJSON struct {
	Valid          bool            `json:"valid"`
	Version        uint64          `json:"version"`
	Owner          uint32          `json:"owner"`
	Workloads      int             `json:"workloads"`
	Challenge      string          `json:"challenge"`
	KeysChecked    bool            `json:"keys_checked"`
	Met            bool            `json:"met"`
	Weight         uint64          `json:"weight"`
	WeightRequired uint64          `json:"weight_required"`
	Missing        []uint32        `json:"missing"`
	Requests       []requestJSON   `json:"requests"`
	Ignored        []ignoredJSON   `json:"ignored"`
	Signatures     []signatureJSON `json:"signatures"`
}

type ignoredJSON struct {
	Index  int    `json:"index"`
	Twin   uint32 `json:"twin"`
	Reason string `json:"reason"`
}

type requestJSON struct {
	Twin     uint32 `json:"twin"`
	Weight   uint64 `json:"weight"`
	Required bool   `json:"required"`
	Signed   bool   `json:"signed"`
}

type signatureJSON struct {
	Twin uint32     `json:"twin"`
	Key  key.Public `json:"key"`
}

func printCheck(w io.Writer, d *spec.Deployment, r spec.Result, keysFile string, asJSON bool) {
	if asJSON {
		j := checkJSON{
			Valid: true, Version: d.Version, Owner: d.Owner, Workloads: len(d.Workloads),
			Challenge: r.Challenge.String(), KeysChecked: keysFile != "", Met: r.Met,
			Weight: r.Weight, WeightRequired: r.WeightRequired,
			Missing: r.Missing, Ignored: []ignoredJSON{},
			Requests: []requestJSON{}, Signatures: []signatureJSON{},
		}
		if j.Missing == nil {
			j.Missing = []uint32{}
		}
		for _, ig := range r.Ignored {
			j.Ignored = append(j.Ignored, ignoredJSON(ig))
		}
		for _, q := range r.Requests {
			j.Requests = append(j.Requests, requestJSON{q.Twin, q.Weight, q.Required, q.Signed})
		}
		for _, s := range d.Signatures {
			j.Signatures = append(j.Signatures, signatureJSON{s.Twin, s.Key})
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(j)
		return
	}
	fmt.Fprintf(w, "valid: deployment version %d, owner twin %d, %d workloads\n", d.Version, d.Owner, len(d.Workloads))
	fmt.Fprintf(w, "challenge %s\n", r.Challenge)
	if keysFile == "" {
		fmt.Fprintln(w, "keys: as the signatures declare them (not checked against the twins': use --keys)")
	} else {
		fmt.Fprintf(w, "keys: %s\n", keysFile)
	}
	for _, q := range r.Requests {
		req, st := "", "not signed"
		if q.Required {
			req = " required"
		}
		if q.Signed {
			st = "signed"
		}
		fmt.Fprintf(w, "  twin %d weight %d%s: %s\n", q.Twin, q.Weight, req, st)
	}
	for _, ig := range r.Ignored {
		fmt.Fprintf(w, "  signature %d (twin %d) ignored: %s\n", ig.Index, ig.Twin, ig.Reason)
	}
	verdict := "met"
	if !r.Met {
		verdict = "NOT met"
		if len(r.Missing) > 0 {
			verdict += fmt.Sprintf(" (required twins not signed: %v)", r.Missing)
		}
	}
	fmt.Fprintf(w, "requirement %s: weight %d of %d\n", verdict, r.Weight, r.WeightRequired)
}
