package scim

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
)

// groupJSON is the SCIM representation of g.
func groupJSON(g *Group, base string) map[string]any {
	m := map[string]any{
		"schemas":     []any{schemaGroup},
		"id":          g.ID,
		"displayName": g.DisplayName,
		"meta": map[string]any{
			"resourceType": "Group",
			"created":      timestamp(g.Created),
			"lastModified": timestamp(g.LastModified),
			"location":     base + "/Groups/" + g.ID,
			"version":      etag(g.Version),
		},
	}
	if g.ExternalID != "" {
		m["externalId"] = g.ExternalID
	}
	members := make([]any, 0, len(g.Members))
	for _, id := range g.Members {
		members = append(members, map[string]any{"value": id, "type": "User", "$ref": base + "/Users/" + id})
	}
	m["members"] = members
	return m
}

func cloneGroup(g *Group) *Group {
	c := *g
	c.Members = slices.Clone(g.Members)
	return &c
}

func sameGroup(a, b *Group) bool {
	return a.DisplayName == b.DisplayName && a.ExternalID == b.ExternalID && slices.Equal(a.Members, b.Members)
}

// parseMembers decodes members: a list of (or one) {"value": "<user id>"}.
func parseMembers(raw json.RawMessage) ([]string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil {
		items = []json.RawMessage{raw}
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		var m struct {
			Value *string `json:"value"`
		}
		if json.Unmarshal(it, &m) != nil || m.Value == nil || *m.Value == "" || len(*m.Value) > maxStringLen {
			return nil, badRequest("invalidValue", "members must be objects with the user's id as \"value\"")
		}
		out = append(out, *m.Value)
	}
	return out, nil
}

// setGroupAttr applies one operation to one attribute of g.
func setGroupAttr(g *Group, op string, p *patchPath, raw json.RawMessage) error {
	if isSchemaItself(p, schemaGroup) {
		if op == "remove" {
			return badRequest("invalidPath", "cannot remove the core schema")
		}
		return applyObject(raw, op, func(string, json.RawMessage) bool { return false },
			func(op string, p *patchPath, raw json.RawMessage) error { return setGroupAttr(g, op, p, raw) })
	}
	if !coreAttr(p.Attr, schemaGroup) {
		return nil
	}
	name := strings.ToLower(p.Attr.Name)
	simple := p.Filter == nil && p.Attr.Sub == ""
	switch name {
	case "displayname":
		if !simple {
			return badRequest("invalidPath", "displayName has no sub-attributes")
		}
		if op == "remove" {
			return badRequest("mutability", "displayName is required")
		}
		s, err := parseString(raw, "displayName")
		if err != nil {
			return err
		}
		if _, ok := GroupName(s); !ok {
			return badRequest("invalidValue", "displayName %q does not make a usable group name: it needs a letter or digit and at most 63 characters", s)
		}
		g.DisplayName = s
	case "externalid":
		if !simple {
			return badRequest("invalidPath", "externalId has no sub-attributes")
		}
		s := ""
		if op != "remove" {
			var err error
			if s, err = parseString(raw, "externalId"); err != nil {
				return err
			}
		}
		g.ExternalID = s
	case "members":
		members, err := applyMembers(g.Members, op, p, raw)
		if err != nil {
			return err
		}
		g.Members = members
	case "id", "meta", "schemas":
		return badRequest("mutability", "%s is read-only", p.Attr.Name)
	default:
		return badRequest("invalidPath", "unknown attribute %q", p.Attr.Name)
	}
	return nil
}

// applyMembers applies one operation to the members attribute, in the
// forms Okta and Entra ID send: add or replace a list of {"value": id},
// remove "members[value eq \"id\"]", or remove with a list of values.
func applyMembers(members []string, op string, p *patchPath, raw json.RawMessage) ([]string, error) {
	sub := strings.ToLower(p.sub())
	if sub != "" && sub != "value" {
		return nil, badRequest("invalidPath", "members can only be changed by value")
	}
	var vals []string
	if !(op == "remove" && isNull(raw)) {
		var err error
		if sub == "value" {
			var s string
			if s, err = parseString(raw, "members.value"); err == nil && s == "" {
				err = badRequest("invalidValue", "members.value must be a user id")
			}
			vals = []string{s}
		} else {
			vals, err = parseMembers(raw)
		}
		if err != nil {
			return nil, err
		}
	}
	matched := func(id string) bool {
		return p.Filter == nil || match(p.Filter, map[string]any{"value": id, "type": "User"}, schemaGroup, "members.")
	}
	var out []string
	switch {
	case op == "remove" && p.Filter == nil && len(vals) > 0:
		for _, id := range members {
			if !slices.Contains(vals, id) {
				out = append(out, id)
			}
		}
	case op == "remove":
		for _, id := range members {
			if !matched(id) {
				out = append(out, id)
			}
		}
	case op == "add":
		out = append(slices.Clone(members), vals...)
	case p.Filter == nil: // replace all
		out = vals
	default: // replace the matching members
		for _, id := range members {
			if !matched(id) {
				out = append(out, id)
			}
		}
		out = append(out, vals...)
	}
	var uniq []string
	for _, id := range out {
		if !slices.Contains(uniq, id) {
			uniq = append(uniq, id)
		}
	}
	return uniq, nil
}

// groupBody applies a POST or PUT body to g.
func groupBody(g *Group, body map[string]json.RawMessage) error {
	b, _ := json.Marshal(body)
	err := applyObject(b, "replace", func(k string, _ json.RawMessage) bool {
		switch strings.ToLower(k) {
		case "schemas", "id", "meta":
			return true
		}
		return false
	}, func(op string, p *patchPath, raw json.RawMessage) error { return setGroupAttr(g, op, p, raw) })
	if err != nil {
		return err
	}
	if g.DisplayName == "" {
		return badRequest("invalidValue", "displayName is required")
	}
	return nil
}

// checkGroup checks that g's name is unique among groups after the
// mapping and that its new members are users.
func (h *handler) checkGroup(ctx context.Context, g *Group, oldMembers []string) error {
	name, _ := GroupName(g.DisplayName)
	groups, err := h.dir.ListGroups(ctx)
	if err != nil {
		return err
	}
	for _, o := range groups {
		if on, _ := GroupName(o.DisplayName); on == name && o.ID != g.ID {
			return &scimError{status: http.StatusConflict, scimType: "uniqueness", detail: "a group named " + name + " already exists"}
		}
	}
	for _, id := range g.Members {
		if slices.Contains(oldMembers, id) {
			continue
		}
		if _, err := h.dir.GetUser(ctx, id); errors.Is(err, ErrNotFound) {
			return badRequest("invalidValue", "member %q is not a known user", id)
		} else if err != nil {
			return err
		}
	}
	return nil
}

func (h *handler) writeGroup(w http.ResponseWriter, r *http.Request, status int, g *Group) {
	res := groupJSON(g, baseURL(r))
	w.Header().Set("ETag", etag(g.Version))
	if status == http.StatusCreated {
		w.Header().Set("Location", res["meta"].(map[string]any)["location"].(string))
	}
	writeJSON(w, status, project(res, r.URL.Query()))
}

func (h *handler) listGroups(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	pg, err := parsePage(q)
	if err != nil {
		return err
	}
	var f filterNode
	if s := q.Get("filter"); s != "" {
		if f, err = parseFilter(s); err != nil {
			return badRequest("invalidFilter", "invalid filter: %v", err)
		}
	}
	groups, err := h.dir.ListGroups(r.Context())
	if err != nil {
		return err
	}
	slices.SortFunc(groups, func(a, b *Group) int {
		return cmp.Or(a.Created.Compare(b.Created), strings.Compare(a.ID, b.ID))
	})
	base := baseURL(r)
	var res []map[string]any
	for _, g := range groups {
		m := groupJSON(g, base)
		if f == nil || match(f, m, schemaGroup, "") {
			res = append(res, m)
		}
	}
	writeList(w, q, pg, res)
	return nil
}

func (h *handler) getGroup(w http.ResponseWriter, r *http.Request, id string) error {
	g, err := h.dir.GetGroup(r.Context(), id)
	if err != nil {
		return err
	}
	h.writeGroup(w, r, http.StatusOK, g)
	return nil
}

func (h *handler) createGroup(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	body, err := readObject(w, r, schemaGroup)
	if err != nil {
		return err
	}
	g := &Group{}
	if err := groupBody(g, body); err != nil {
		return err
	}
	unlock, err := h.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if err := h.checkGroup(ctx, g, nil); err != nil {
		return err
	}
	now := h.now()
	g.ID, g.Created, g.LastModified, g.Version = h.newID(), now, now, 1
	if err := h.dir.CreateGroup(ctx, g); err != nil {
		return err
	}
	h.logger.InfoContext(ctx, "scim group created", "id", g.ID, "group", g.DisplayName, "members", len(g.Members))
	h.writeGroup(w, r, http.StatusCreated, g)
	return nil
}

func (h *handler) replaceGroup(w http.ResponseWriter, r *http.Request, id string) error {
	body, err := readObject(w, r, schemaGroup)
	if err != nil {
		return err
	}
	return h.updateGroup(w, r, id, func(old *Group) (*Group, error) {
		g := &Group{ID: old.ID, Created: old.Created, Version: old.Version}
		return g, groupBody(g, body)
	})
}

func (h *handler) patchGroup(w http.ResponseWriter, r *http.Request, id string) error {
	ops, err := readPatch(w, r)
	if err != nil {
		return err
	}
	return h.updateGroup(w, r, id, func(old *Group) (*Group, error) {
		g := cloneGroup(old)
		for _, op := range ops {
			if err := applyGroupOp(g, op); err != nil {
				return nil, err
			}
		}
		return g, nil
	})
}

func applyGroupOp(g *Group, op patchOp) error {
	return applyOp(g.ID, op, func(op string, p *patchPath, raw json.RawMessage) error { return setGroupAttr(g, op, p, raw) })
}

func (h *handler) updateGroup(w http.ResponseWriter, r *http.Request, id string, change func(*Group) (*Group, error)) error {
	ctx := r.Context()
	unlock, err := h.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	old, err := h.dir.GetGroup(ctx, id)
	if err != nil {
		return err
	}
	if err := checkIfMatch(r, old.Version); err != nil {
		return err
	}
	g, err := change(old)
	if err != nil {
		return err
	}
	if sameGroup(old, g) {
		h.writeGroup(w, r, http.StatusOK, old)
		return nil
	}
	if err := h.checkGroup(ctx, g, old.Members); err != nil {
		return err
	}
	g.LastModified = h.now()
	g.Version = old.Version + 1
	if err := h.dir.ReplaceGroup(ctx, g); err != nil {
		return err
	}
	h.logger.InfoContext(ctx, "scim group updated", "id", g.ID, "group", g.DisplayName, "members", len(g.Members))
	h.writeGroup(w, r, http.StatusOK, g)
	return nil
}

func (h *handler) deleteGroup(w http.ResponseWriter, r *http.Request, id string) error {
	ctx := r.Context()
	unlock, err := h.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	old, err := h.dir.GetGroup(ctx, id)
	if err != nil {
		return err
	}
	if err := checkIfMatch(r, old.Version); err != nil {
		return err
	}
	if err := h.dir.DeleteGroup(ctx, id); err != nil {
		return err
	}
	h.logger.InfoContext(ctx, "scim group deleted", "id", id, "group", old.DisplayName)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
