package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/gateway/sshgw"
	"github.com/mayflyhq/mayfly/internal/httpapi"
)

// cmdSessionPlay replays the terminal recording of an SSH session at its
// original pace (or faster or slower).
func cmdSessionPlay(e *env, args []string) error {
	f := newFlags(e, "sessions play", false)
	speed := f.Float64("speed", 1, "playback speed factor (2 is twice as fast)")
	channel := f.Int("channel", 0, "the session channel to play (listed by sessions show)")
	idle := f.Duration("idle-limit", 0, "shorten every pause to at most this (0 keeps the original pauses)")
	c, err := f.start(e, args, 1)
	if err != nil {
		return err
	}
	if *speed <= 0 || *speed > 1000 {
		return usageErr("sessions play: --speed %v: want a factor above 0, at most 1000", *speed)
	}
	if *channel < 0 {
		return usageErr("sessions play: --channel %d: want 0 or more", *channel)
	}
	cast, err := c.GetRaw(e.ctx, "/v1/sessions/"+url.PathEscape(f.pos[0])+"/cast", url.Values{"channel": {strconv.Itoa(*channel)}})
	if err != nil {
		return err
	}
	return playCast(e.ctx, bytes.NewReader(cast), e.stdout, *speed, *idle, sleepCtx)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// playCast writes the output events of an asciicast v2 recording to w,
// each at its time divided by speed, pauses capped at idle when set.
func playCast(ctx context.Context, r io.Reader, w io.Writer, speed float64, idle time.Duration, sleep func(context.Context, time.Duration) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	if !sc.Scan() {
		return mayfly.Errorf(mayfly.EINVALID, "the recording is empty")
	}
	var h sshgw.CastHeader
	if err := json.Unmarshal(sc.Bytes(), &h); err != nil || h.Version != 2 {
		return mayfly.Errorf(mayfly.EINVALID, "the recording is not asciicast v2")
	}
	var played float64 // seconds of the recording already played
	line := 1
	for sc.Scan() {
		line++
		var ev [3]json.RawMessage
		var t float64
		var kind, data string
		if json.Unmarshal(sc.Bytes(), &ev) != nil || json.Unmarshal(ev[0], &t) != nil ||
			json.Unmarshal(ev[1], &kind) != nil || json.Unmarshal(ev[2], &data) != nil {
			return mayfly.Errorf(mayfly.EINVALID, "recording line %d is not an asciicast event", line)
		}
		if kind != "o" {
			continue
		}
		if wait := t - played; wait > 0 {
			d := time.Duration(wait / speed * float64(time.Second))
			if idle > 0 && d > idle {
				d = idle
			}
			if err := sleep(ctx, d); err != nil {
				return err
			}
			played = t
		}
		if _, err := io.WriteString(w, data); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read recording: %w", err)
	}
	return nil
}

// mergeSSH adds a later page's SSH summary to the first's.
func mergeSSH(all *httpapi.SessionView, more *sshgw.Summary) {
	if more == nil || all.SSH == nil {
		return
	}
	all.SSH.Channels = append(all.SSH.Channels, more.Channels...)
	all.SSH.Transfers = append(all.SSH.Transfers, more.Transfers...)
	all.SSH.Refused = append(all.SSH.Refused, more.Refused...)
	all.SSH.Forwards = append(all.SSH.Forwards, more.Forwards...)
	all.SSH.CastBytes += more.CastBytes
}

// printSSHSummary prints an SSH session's channels, transfers and
// refusals.
func printSSHSummary(e *env, s mayfly.Session, sum *sshgw.Summary) {
	var rows [][]string
	for _, c := range sum.Channels {
		what := c.Type
		switch {
		case c.Command != "":
			what += " " + oneLine(c.Command)
		case c.Subsystem != "":
			what += " " + c.Subsystem
		}
		exit := "-"
		if c.Exit != nil && c.Exit.Status != nil {
			exit = strconv.Itoa(*c.Exit.Status)
		} else if c.Exit != nil && c.Exit.Signal != "" {
			exit = "signal " + c.Exit.Signal
		}
		size := ""
		if c.Width > 0 {
			size = fmt.Sprintf("%dx%d", c.Width, c.Height)
		}
		rec := ""
		if c.Recorded {
			rec = fmt.Sprintf("mayfly sessions play %s --channel %d", s.ID, c.Channel)
		}
		rows = append(rows, []string{strconv.Itoa(c.Channel), safeText(what), size, exit, rec})
	}
	e.table("CHANNEL\tRAN\tTERMINAL\tEXIT\tREPLAY", rows)
	if len(sum.Transfers) > 0 {
		fmt.Fprintln(e.stdout)
		rows = nil
		for _, t := range sum.Transfers {
			path := t.Path
			if t.NewPath != "" {
				path += " -> " + t.NewPath
			}
			if t.Command != "" {
				path = t.Command
			}
			rows = append(rows, []string{strconv.Itoa(t.Channel), t.Protocol, t.Op, safeText(oneLine(path)),
				strconv.FormatInt(t.BytesRead, 10), strconv.FormatInt(t.BytesWritten, 10)})
		}
		e.table("CHANNEL\tPROTOCOL\tOP\tFILE\tREAD\tWRITTEN", rows)
	}
	if len(sum.Refused)+len(sum.Forwards) > 0 {
		fmt.Fprintln(e.stdout)
		rows = nil
		for _, r := range sum.Refused {
			rows = append(rows, []string{"refused", r.What, safeText(r.Detail)})
		}
		for _, r := range sum.Forwards {
			rows = append(rows, []string{"allowed", r.What, safeText(r.Detail)})
		}
		e.table("OUTCOME\tWHAT\tDETAIL", rows)
	}
}
