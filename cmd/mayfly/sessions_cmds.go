package main

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mayflyhq/mayfly"
	"github.com/mayflyhq/mayfly/internal/httpapi"
	"github.com/mayflyhq/mayfly/internal/sessionlog"
)

// cmdSessions lists gateway sessions, shows one with its statements, or
// verifies one's chain.
func cmdSessions(e *env, args []string) error {
	f := newFlags(e, "sessions", true)
	q := url.Values{}
	for _, k := range []string{"lease", "user", "kind"} {
		f.Func(k, "only sessions with this "+k, func(v string) error { q.Set(k, v); return nil })
	}
	open := f.Bool("open", false, "only sessions not ended")
	pf := addPageFlags(f, true)
	c, err := f.start(e, args, 0, "text")
	if err != nil {
		return err
	}
	if *open {
		q.Set("open", "true")
	}
	ss, err := listPages[mayfly.Session](e, c, "sessions", "/v1/sessions", q, pf)
	if err != nil {
		return err
	}
	if ss == nil {
		ss = []mayfly.Session{}
	}
	if f.json() {
		return e.printJSON(ss)
	}
	var rows [][]string
	for _, s := range ss {
		end := "open"
		if !s.EndedAt.IsZero() {
			end = fmtTime(s.EndedAt) + " (" + s.EndReason + ")"
		}
		rows = append(rows, []string{s.ID, s.Kind, s.User, s.LeaseID, s.Target + "/" + s.Grant, s.ClientAddr,
			fmtTime(s.StartedAt), end, strconv.FormatInt(s.Events, 10)})
	}
	e.table("ID\tKIND\tUSER\tLEASE\tACCESS\tCLIENT\tSTARTED\tENDED\tEVENTS", rows)
	return nil
}

func cmdSessionShow(e *env, args []string) error {
	f := newFlags(e, "sessions show", true)
	events := f.Bool("events", false, "include every event of the chain (-o json)")
	c, err := f.start(e, args, 1, "text")
	if err != nil {
		return err
	}
	id := f.pos[0]
	q := url.Values{}
	if *events {
		q.Set("events", "true")
	}
	var all httpapi.SessionView
	for after := int64(0); ; {
		q.Set("after", strconv.FormatInt(after, 10))
		var v httpapi.SessionView
		if err := c.Do(e.ctx, "GET", "/v1/sessions/"+url.PathEscape(id), q, nil, &v); err != nil {
			return err
		}
		if after == 0 {
			all = v
		} else {
			all.Statements = append(all.Statements, v.Statements...)
			all.Events = append(all.Events, v.Events...)
			mergeSSH(&all, v.SSH)
		}
		if v.NextAfter == 0 {
			break
		}
		after = v.NextAfter
	}
	all.NextAfter = 0
	if f.json() {
		return e.printJSON(all)
	}
	s := all.Session
	w := e.stdout
	fmt.Fprintf(w, "session %s (%s)\n", safeText(s.ID), safeText(s.Kind))
	fmt.Fprintf(w, "  user     %s\n  lease    %s\n  access   %s/%s as %s\n  client   %s\n", safeText(s.User),
		safeText(s.LeaseID), safeText(s.Target), safeText(s.Grant), safeText(s.Account), safeText(s.ClientAddr))
	fmt.Fprintf(w, "  started  %s\n", fmtTime(s.StartedAt))
	if !s.EndedAt.IsZero() {
		fmt.Fprintf(w, "  ended    %s (%s)\n", fmtTime(s.EndedAt), safeText(s.EndReason))
	}
	fmt.Fprintf(w, "  events   %d\n\n", all.EventCount)
	var rows [][]string
	for _, st := range all.Statements {
		res := st.Tag
		if st.Error != "" {
			res = "ERROR " + st.Error
		}
		rows = append(rows, []string{strconv.FormatInt(st.Seq, 10), st.Start.Local().Format("15:04:05.000"),
			(time.Duration(st.DurationUS) * time.Microsecond).String(), strconv.FormatInt(st.Rows, 10), oneLine(res),
			oneLine(st.Text) + paramsText(st.Statement)})
	}
	if all.SSH != nil {
		printSSHSummary(e, all.Session, all.SSH)
		return nil
	}
	e.table("SEQ\tSTART\tDURATION\tROWS\tRESULT\tSTATEMENT", rows)
	return nil
}

func paramsText(st mayfly.Statement) string {
	switch {
	case len(st.Params) > 0:
		ps := make([]string, len(st.Params))
		for i, p := range st.Params {
			if p == nil {
				ps[i] = "NULL"
			} else {
				ps[i] = strconv.Quote(*p)
			}
		}
		return " [" + strings.Join(ps, ", ") + "]"
	case len(st.ParamsHMAC) > 0:
		return fmt.Sprintf(" [%d parameters, keyed hashes]", len(st.ParamsHMAC))
	}
	return ""
}

func cmdSessionVerify(e *env, args []string) error {
	f := newFlags(e, "sessions verify", true)
	c, err := f.start(e, args, 1, "text")
	if err != nil {
		return err
	}
	var res sessionlog.Result
	if err := c.Do(e.ctx, "GET", "/v1/sessions/"+url.PathEscape(f.pos[0])+"/verify", nil, nil, &res); err != nil {
		return err
	}
	if f.json() {
		if err := e.printJSON(res); err != nil {
			return err
		}
	} else if res.OK {
		anchored := "not anchored in the audit trail (open, or its end was pruned)"
		if res.Anchored {
			anchored = "its end is anchored in the audit trail"
		}
		fmt.Fprintf(e.stdout, "session log intact: %d events verified; %s\n", res.Checked, anchored)
	}
	if !res.OK {
		return &mayfly.Error{Code: mayfly.ECONFLICT, Message: fmt.Sprintf("session %s log broken at event %d: %s", res.SessionID, res.Broken, res.Problem)}
	}
	return nil
}
