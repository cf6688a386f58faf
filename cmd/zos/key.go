package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/zosgrid/zos/internal/key"
)

func keyCmd() *cobra.Command {
	c := &cobra.Command{Use: "key", Short: "Manage ed25519 identities"}
	gen := &cobra.Command{
		Use:   "gen FILE",
		Short: "Generate a key pair, write the secret to FILE (mode 0600), print the public key",
		Args:  usageArgs(1, "one FILE"),
		RunE: func(c *cobra.Command, args []string) error {
			s, err := key.Generate()
			if err != nil {
				return err
			}
			if err := s.Save(args[0]); err != nil {
				return fmt.Errorf("%w (choose a new file name; an existing key is never overwritten)", err)
			}
			fmt.Fprintln(c.OutOrStdout(), s.Public())
			return nil
		},
	}
	pub := &cobra.Command{
		Use:   "pub FILE",
		Short: "Print the public key of a secret key file",
		Args:  usageArgs(1, "one FILE"),
		RunE: func(c *cobra.Command, args []string) error {
			s, err := key.Load(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintln(c.OutOrStdout(), s.Public())
			return nil
		},
	}
	c.AddCommand(gen, pub)
	return c
}
