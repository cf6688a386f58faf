package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/zosgrid/zos/internal/hub/hubclient"
)

func hubConvertCmd() *cobra.Command {
	var f hubFlags
	var creds, platform string
	var wait bool
	var interval time.Duration
	c := &cobra.Command{
		Use:   "convert docker://REF|docker-archive:FILE NAMESPACE/NAME[:TAG] --hub URL --key FILE [--creds USER:PASSWORD] [--wait]",
		Short: "Have the hub convert a registry image or a docker save tarball into an flist in your namespace (no Docker daemon)",
		Long: `Ask the hub to convert an image from a registry into an flist: the hub pulls the image,
packs its layers into its own chunk store and publishes the flist as NAMESPACE/NAME[:TAG], as a push
would. With docker-archive:FILE, FILE (a 'docker save' tarball of one image) is uploaded and
converted the same way. When the tag held an flist, new chunks are stored as deltas against it.
The job runs on the hub: without --wait this prints its ID, and 'zos hub convert --job ID'
waits for it later. --creds are sent to the hub for this job only; the hub neither stores nor
logs them.`,
		Args: func(c *cobra.Command, args []string) error {
			if c.Flags().Changed("job") {
				return usageArgs(0, "no arguments with --job")(c, args)
			}
			return usageArgs(2, "docker://REF or docker-archive:FILE, and NAMESPACE/NAME[:TAG]")(c, args)
		},
		RunE: func(c *cobra.Command, args []string) error {
			ctx := c.Context()
			jobID, _ := c.Flags().GetString("job")
			cl, err := f.client(jobID == "")
			if err != nil {
				return err
			}
			var j hubclient.Job
			if jobID == "" {
				req := hubclient.ConvertRequest{Source: args[0], Target: args[1], Platform: platform}
				file, archive := strings.CutPrefix(req.Source, "docker-archive:")
				if !archive && !strings.HasPrefix(req.Source, "docker://") {
					return &exitError{exitUsage, fmt.Errorf("%s: the hub converts images from registries (docker://REF) and uploaded docker save tarballs (docker-archive:FILE)", req.Source)}
				}
				if _, err := parseRefArg(req.Target); err != nil {
					return err
				}
				if creds != "" {
					u, p, ok := strings.Cut(creds, ":")
					if !ok || u == "" || archive {
						return &exitError{exitUsage, errors.New("--creds takes USER:PASSWORD, for docker://REF")}
					}
					req.Username, req.Password = u, p
				}
				if archive {
					if file == "" {
						return &exitError{exitUsage, errors.New("docker-archive:FILE: name the file")}
					}
					if !f.json {
						fmt.Fprintf(os.Stderr, "uploading %s\n", file)
					}
					j, err = cl.ConvertArchive(ctx, file, hubclient.ArchiveRequest{Target: req.Target, Platform: platform})
				} else {
					j, err = cl.Convert(ctx, req)
				}
				if err != nil {
					return err
				}
				if !wait {
					if f.json {
						return printJSON(c.OutOrStdout(), j)
					}
					fmt.Fprintf(c.OutOrStdout(), "%s\n", j.ID)
					return nil
				}
				jobID = j.ID
			}
			var bar *progressbar.ProgressBar
			if !f.json && isTerminal(os.Stderr) {
				bar = newBar("queued")
			}
			last := ""
			j, err = cl.WaitJob(ctx, jobID, interval, func(j hubclient.Job) {
				if j.Over() {
					return // said below
				}
				p := j.Progress
				desc := j.State
				if j.State == hubclient.JobRunning && p.Layers > 0 {
					desc = fmt.Sprintf("layer %d/%d", p.Layer, p.Layers)
				}
				if bar != nil {
					bar.Describe(desc)
					bar.Set64(p.Bytes)
				} else if !f.json && desc != last {
					fmt.Fprintf(os.Stderr, "%s %s (%.1f MB read, %d chunks, %d new)\n", j.ID[:8], desc, mb(p.Bytes), p.Chunks, p.NewChunks)
				}
				last = desc
			})
			if bar != nil {
				bar.Finish()
			}
			if err != nil {
				return err
			}
			if f.json {
				if err := printJSON(c.OutOrStdout(), j); err != nil {
					return err
				}
			} else if j.State == hubclient.JobDone {
				secs := j.Finished.Sub(j.Started).Seconds()
				fmt.Fprintf(c.OutOrStdout(), "%s@%s\n", j.Result.Ref, j.Result.Digest)
				fmt.Fprintf(os.Stderr, "converted %s: %d layers, %.1f MB of tar in %.1fs, %d chunks (%d new, %d as deltas), %.1f MB stored\n",
					j.Source, j.Progress.Layers, mb(j.Progress.Bytes), secs, j.Progress.Chunks, j.Progress.NewChunks, j.Progress.DeltaChunks, mb(j.Progress.Stored))
			}
			if j.State == hubclient.JobFailed {
				return fmt.Errorf("conversion %s failed: %s", j.ID, j.Error)
			}
			return nil
		},
	}
	c.Flags().StringVar(&creds, "creds", "", "registry credentials USER:PASSWORD, for this job only")
	c.Flags().StringVar(&platform, "platform", "", "which image of a multi-platform index, os/arch[/variant] (default: the hub's)")
	c.Flags().BoolVar(&wait, "wait", false, "wait for the job to end, showing its progress")
	c.Flags().String("job", "", "wait for this job (an ID printed before) instead of starting one")
	c.Flags().DurationVar(&interval, "poll", 500*time.Millisecond, "how often --wait asks the hub")
	f.add(c, true)
	return c
}
