package scim

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"
)

// ignoredUserAttrs are core User attributes (RFC 7643 section 4.1) that
// Mayfly accepts and does not store.
var ignoredUserAttrs = map[string]bool{
	"name": true, "nickname": true, "profileurl": true, "title": true, "usertype": true,
	"preferredlanguage": true, "locale": true, "timezone": true, "password": true,
	"phonenumbers": true, "ims": true, "photos": true, "addresses": true,
	"entitlements": true, "roles": true, "x509certificates": true,
}

// maxStringLen bounds the stored string attributes.
const maxStringLen = 1024

// readObject reads a JSON object body, checking that its "schemas" lists
// schema.
func readObject(w http.ResponseWriter, r *http.Request, schema string) (map[string]json.RawMessage, error) {
	var body map[string]json.RawMessage
	if err := readBody(w, r, &body); err != nil {
		return nil, err
	}
	if body == nil {
		return nil, badRequest("invalidSyntax", "request body must be a JSON object")
	}
	var schemas []string
	raw, _ := lookupRaw(body, "schemas")
	if raw == nil || json.Unmarshal(raw, &schemas) != nil || !hasSchema(schemas, schema) {
		return nil, badRequest("invalidSyntax", "\"schemas\" must list %q", schema)
	}
	return body, nil
}

func lookupRaw(m map[string]json.RawMessage, name string) (json.RawMessage, bool) {
	for k, v := range m {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return nil, false
}

// patchOp is one PATCH operation.
type patchOp struct {
	Op    string          `json:"op"`
	Path  string          `json:"path"`
	Value json.RawMessage `json:"value"`
}

// readPatch reads a PatchOp request body.
func readPatch(w http.ResponseWriter, r *http.Request) ([]patchOp, error) {
	var req struct {
		Schemas    []string  `json:"schemas"`
		Operations []patchOp `json:"Operations"`
	}
	if err := readBody(w, r, &req); err != nil {
		return nil, err
	}
	if !hasSchema(req.Schemas, schemaPatch) {
		return nil, badRequest("invalidSyntax", "\"schemas\" must list %q", schemaPatch)
	}
	if len(req.Operations) == 0 {
		return nil, badRequest("invalidValue", "\"Operations\" must list at least one operation")
	}
	if len(req.Operations) > maxOperations {
		return nil, badRequest("tooMany", "at most %d operations per request", maxOperations)
	}
	for i := range req.Operations {
		op := &req.Operations[i]
		op.Op = strings.ToLower(op.Op)
		if op.Op != "add" && op.Op != "remove" && op.Op != "replace" {
			return nil, badRequest("invalidSyntax", "operation %d: op must be add, remove or replace", i+1)
		}
	}
	return req.Operations, nil
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

// parseString decodes a JSON string; null is "".
func parseString(raw json.RawMessage, attr string) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", badRequest("invalidValue", "%s must be a string", attr)
	}
	if len(s) > maxStringLen || !utf8.ValidString(s) {
		return "", badRequest("invalidValue", "%s must be valid UTF-8 of at most %d bytes", attr, maxStringLen)
	}
	return s, nil
}

// parseBool decodes a JSON boolean or the strings "true" and "false" in
// any case, as Microsoft Entra ID sends them.
func parseBool(raw json.RawMessage, attr string) (bool, error) {
	var b bool
	if json.Unmarshal(raw, &b) == nil && !isNull(raw) {
		return b, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		switch strings.ToLower(strings.TrimSpace(s)) {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
	}
	return false, badRequest("invalidValue", "%s must be true or false", attr)
}

// coreAttr resolves a path's schema: ok is false for attributes of an
// extension schema, which Mayfly ignores.
func coreAttr(p attrPath, core string) bool {
	return p.URN == "" || strings.EqualFold(p.URN, core)
}

// isSchemaItself reports whether the path names the core schema URN as a
// whole, as in {"urn:...:core:2.0:User": {...}}.
func isSchemaItself(p *patchPath, core string) bool {
	return p.Attr.URN != "" && p.Attr.Sub == "" && p.Filter == nil &&
		strings.EqualFold(p.Attr.URN+":"+p.Attr.Name, core)
}

// applyObject applies op to each attribute of a JSON object value, as in
// a PATCH without a path or a POST/PUT body.
func applyObject(raw json.RawMessage, op string, skip func(key string, raw json.RawMessage) bool, set func(op string, p *patchPath, raw json.RawMessage) error) error {
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil || obj == nil {
		return badRequest("invalidValue", "value must be a JSON object when there is no path")
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if skip(k, obj[k]) {
			continue
		}
		p, err := parsePath(k)
		if err != nil {
			return badRequest("invalidPath", "invalid attribute %q: %v", k, err)
		}
		if err := set(op, p, obj[k]); err != nil {
			return err
		}
	}
	return nil
}

// setUserAttr applies one operation to one attribute of u.
func setUserAttr(u *User, op string, p *patchPath, raw json.RawMessage) error {
	if isSchemaItself(p, schemaUser) {
		if op == "remove" {
			return badRequest("invalidPath", "cannot remove the core schema")
		}
		return applyObject(raw, op, func(string, json.RawMessage) bool { return false },
			func(op string, p *patchPath, raw json.RawMessage) error { return setUserAttr(u, op, p, raw) })
	}
	if !coreAttr(p.Attr, schemaUser) {
		return nil
	}
	name := strings.ToLower(p.Attr.Name)
	simple := p.Filter == nil && p.Attr.Sub == ""
	switch name {
	case "active":
		if !simple {
			return badRequest("invalidPath", "active has no sub-attributes")
		}
		if op == "remove" {
			return badRequest("mutability", "active cannot be removed; set it to false")
		}
		b, err := parseBool(raw, "active")
		if err != nil {
			return err
		}
		u.Active = b
	case "username":
		if !simple {
			return badRequest("invalidPath", "userName has no sub-attributes")
		}
		if op == "remove" {
			return badRequest("mutability", "userName is required")
		}
		s, err := parseString(raw, "userName")
		if err != nil {
			return err
		}
		mapped, ok := UserName(s)
		if !ok {
			return badRequest("invalidValue", "userName %q is not usable: lowercased and without any \"@domain\" it must start with a letter and contain only a-z, 0-9, \"_\", \".\" and \"-\" (at most 63)", s)
		}
		u.UserName = mapped
	case "displayname", "externalid":
		if !simple {
			return badRequest("invalidPath", "%s has no sub-attributes", p.Attr.Name)
		}
		s := ""
		if op != "remove" {
			var err error
			if s, err = parseString(raw, p.Attr.Name); err != nil {
				return err
			}
		}
		if name == "displayname" {
			u.DisplayName = s
		} else {
			u.ExternalID = s
		}
	case "emails":
		emails, err := applyEmails(u.Emails, op, p, raw)
		if err != nil {
			return err
		}
		u.Emails = emails
	case "id", "meta", "groups", "schemas":
		return badRequest("mutability", "%s is read-only", p.Attr.Name)
	default:
		if !ignoredUserAttrs[name] {
			return badRequest("invalidPath", "unknown attribute %q", p.Attr.Name)
		}
	}
	return nil
}

// emailElems is the JSON form of stored emails, for filters and responses:
// every address is of type "work" and the first is primary.
func emailElems(emails []string) []any {
	out := make([]any, len(emails))
	for i, e := range emails {
		out[i] = map[string]any{"value": e, "type": "work", "primary": i == 0}
	}
	return out
}

// parseEmails decodes emails: a list of (or one) {"value", "primary"}
// object or plain string. A primary address comes first.
func parseEmails(raw json.RawMessage) ([]string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var items []json.RawMessage
	if json.Unmarshal(raw, &items) != nil {
		items = []json.RawMessage{raw}
	}
	var out []string
	for _, it := range items {
		var obj struct {
			Value   *string         `json:"value"`
			Primary json.RawMessage `json:"primary"`
		}
		var s string
		primary := false
		switch {
		case json.Unmarshal(it, &s) == nil:
		case json.Unmarshal(it, &obj) == nil && obj.Value != nil:
			s = *obj.Value
			if !isNull(obj.Primary) {
				p, err := parseBool(obj.Primary, "emails.primary")
				if err != nil {
					return nil, err
				}
				primary = p
			}
		default:
			return nil, badRequest("invalidValue", "emails must be objects with a string \"value\"")
		}
		if err := checkEmail(s); err != nil {
			return nil, err
		}
		if primary {
			out = slices.Insert(out, 0, s)
		} else {
			out = append(out, s)
		}
	}
	return out, nil
}

func checkEmail(s string) error {
	if s == "" || len(s) > 320 || !utf8.ValidString(s) || strings.ContainsAny(s, " \t\r\n") {
		return badRequest("invalidValue", "an email address must be non-empty, without spaces, at most 320 bytes")
	}
	return nil
}

// applyEmails applies one operation to the emails attribute.
func applyEmails(emails []string, op string, p *patchPath, raw json.RawMessage) ([]string, error) {
	sub := strings.ToLower(p.sub())
	if sub != "" && sub != "value" {
		return emails, nil // type, primary and display are not stored
	}
	var matched []bool
	n := 0
	for _, e := range emailElems(emails) {
		m := p.Filter == nil || match(p.Filter, e.(map[string]any), schemaUser, "emails.")
		matched = append(matched, m)
		if m {
			n++
		}
	}
	keep := func() []string {
		var out []string
		for i, e := range emails {
			if !matched[i] {
				out = append(out, e)
			}
		}
		return out
	}
	var vals []string
	if op != "remove" || p.Filter == nil && sub == "" {
		var err error
		if sub == "value" {
			var s string
			if s, err = parseString(raw, "emails.value"); err == nil {
				err = checkEmail(s)
			}
			vals = []string{s}
		} else {
			vals, err = parseEmails(raw)
		}
		if err != nil {
			return nil, err
		}
	}
	var out []string
	switch {
	case op == "remove" && p.Filter == nil && sub == "" && len(vals) > 0:
		for _, e := range emails {
			if !slices.ContainsFunc(vals, func(v string) bool { return strings.EqualFold(v, e) }) {
				out = append(out, e)
			}
		}
	case op == "remove":
		out = keep()
	case op == "add" && p.Filter == nil && sub == "":
		out = append(slices.Clone(emails), vals...)
		if len(vals) > 0 && primaryFirst(raw) {
			out = append(slices.Clone(vals), emails...)
		}
	case p.Filter == nil && sub == "":
		out = vals // replace
	case sub == "value" && n > 0:
		out = slices.Clone(emails)
		for i := range out {
			if matched[i] {
				out[i] = vals[0]
			}
		}
	case op == "replace" && sub == "" && n > 0 && matched[0]:
		out = append(vals, keep()...) // the new address replaces the primary
	case op == "replace" && sub == "":
		out = append(keep(), vals...)
	default:
		// add under a filter, or set the value of elements when none
		// matched: Entra ID sets emails[type eq "work"].value on users
		// without an address and expects it to be added.
		out = append(slices.Clone(emails), vals...)
	}
	return dedupeFold(out), nil
}

// primaryFirst reports whether an added list of emails marks one primary.
func primaryFirst(raw json.RawMessage) bool {
	var items []struct {
		Primary json.RawMessage `json:"primary"`
	}
	if json.Unmarshal(raw, &items) != nil {
		var one struct {
			Primary json.RawMessage `json:"primary"`
		}
		if json.Unmarshal(raw, &one) != nil {
			return false
		}
		items = append(items, one)
	}
	for _, it := range items {
		if b, err := parseBool(it.Primary, ""); err == nil && b {
			return true
		}
	}
	return false
}

func dedupeFold(in []string) []string {
	var out []string
	for _, s := range in {
		if !slices.ContainsFunc(out, func(o string) bool { return strings.EqualFold(o, s) }) {
			out = append(out, s)
		}
	}
	return out
}

// userBody applies a POST or PUT body to u; read-only attributes are
// ignored (RFC 7644 section 3.5.1).
func userBody(u *User, body map[string]json.RawMessage) error {
	b, _ := json.Marshal(body)
	err := applyObject(b, "replace", func(k string, _ json.RawMessage) bool {
		switch strings.ToLower(k) {
		case "schemas", "id", "meta", "groups":
			return true
		}
		return false
	}, func(op string, p *patchPath, raw json.RawMessage) error { return setUserAttr(u, op, p, raw) })
	if err != nil {
		return err
	}
	if u.UserName == "" {
		return badRequest("invalidValue", "userName is required")
	}
	return nil
}

// groupRefs maps Mayfly group names to groups, to render users' groups.
type groupRefs map[string]*Group

func (h *handler) groupRefs(ctx context.Context, users ...*User) (groupRefs, error) {
	if !slices.ContainsFunc(users, func(u *User) bool { return len(u.Groups) > 0 }) {
		return nil, nil
	}
	groups, err := h.dir.ListGroups(ctx)
	if err != nil {
		return nil, err
	}
	refs := make(groupRefs, len(groups))
	for _, g := range groups {
		if name, ok := GroupName(g.DisplayName); ok {
			refs[name] = g
		}
	}
	return refs, nil
}

// userJSON is the SCIM representation of u.
func userJSON(u *User, base string, refs groupRefs) map[string]any {
	loc := base + "/Users/" + u.ID
	m := map[string]any{
		"schemas":  []any{schemaUser},
		"id":       u.ID,
		"userName": u.UserName,
		"active":   u.Active,
		"meta": map[string]any{
			"resourceType": "User",
			"created":      timestamp(u.Created),
			"lastModified": timestamp(u.LastModified),
			"location":     loc,
			"version":      etag(u.Version),
		},
	}
	if u.ExternalID != "" {
		m["externalId"] = u.ExternalID
	}
	if u.DisplayName != "" {
		m["displayName"] = u.DisplayName
	}
	if len(u.Emails) > 0 {
		m["emails"] = emailElems(u.Emails)
	}
	if len(u.Groups) > 0 {
		groups := make([]any, 0, len(u.Groups))
		for _, name := range u.Groups {
			ref := map[string]any{"display": name, "type": "direct"}
			if g := refs[name]; g != nil {
				ref["value"] = g.ID
				ref["display"] = g.DisplayName
				ref["$ref"] = base + "/Groups/" + g.ID
			}
			groups = append(groups, ref)
		}
		m["groups"] = groups
	}
	return m
}

func cloneUser(u *User) *User {
	c := *u
	c.Emails = slices.Clone(u.Emails)
	c.Groups = slices.Clone(u.Groups)
	return &c
}

func sameUser(a, b *User) bool {
	return a.UserName == b.UserName && a.ExternalID == b.ExternalID && a.DisplayName == b.DisplayName &&
		a.Active == b.Active && slices.Equal(a.Emails, b.Emails)
}

// userNameFree checks that no user other than id has the name.
func (h *handler) userNameFree(ctx context.Context, name, id string) error {
	other, err := h.dir.FindUserByName(ctx, name)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil
	case err != nil:
		return err
	case other.ID != id:
		return &scimError{status: http.StatusConflict, scimType: "uniqueness", detail: "userName " + name + " is already taken"}
	}
	return nil
}

func (h *handler) writeUser(w http.ResponseWriter, r *http.Request, status int, u *User) error {
	refs, err := h.groupRefs(r.Context(), u)
	if err != nil {
		return err
	}
	res := userJSON(u, baseURL(r), refs)
	w.Header().Set("ETag", etag(u.Version))
	if status == http.StatusCreated {
		w.Header().Set("Location", res["meta"].(map[string]any)["location"].(string))
	}
	writeJSON(w, status, project(res, r.URL.Query()))
	return nil
}

func (h *handler) listUsers(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	q := r.URL.Query()
	page, err := parsePage(q)
	if err != nil {
		return err
	}
	var f filterNode
	if s := q.Get("filter"); s != "" {
		if f, err = parseFilter(s); err != nil {
			return badRequest("invalidFilter", "invalid filter: %v", err)
		}
		f = mapUserNameFilter(f)
	}
	var users []*User
	if name, ok := userNameEq(f); ok {
		// The common "does this user exist" query of every identity provider.
		u, err := h.dir.FindUserByName(ctx, name)
		switch {
		case err == nil:
			users = []*User{u}
		case !errors.Is(err, ErrNotFound):
			return err
		}
	} else if users, err = h.dir.ListUsers(ctx); err != nil {
		return err
	}
	slices.SortFunc(users, func(a, b *User) int {
		return cmp.Or(a.Created.Compare(b.Created), strings.Compare(a.ID, b.ID))
	})
	refs, err := h.groupRefs(ctx, users...)
	if err != nil {
		return err
	}
	base := baseURL(r)
	var res []map[string]any
	for _, u := range users {
		m := userJSON(u, base, refs)
		if f == nil || match(f, m, schemaUser, "") {
			res = append(res, m)
		}
	}
	writeList(w, q, page, res)
	return nil
}

// mapUserNameFilter applies the userName mapping to the values of
// `userName eq "..."` comparisons, so an identity provider looking up
// "Alice@Example.com" finds the user stored as "alice".
func mapUserNameFilter(f filterNode) filterNode {
	switch f := f.(type) {
	case *logicalExpr:
		return &logicalExpr{Op: f.Op, Left: mapUserNameFilter(f.Left), Right: mapUserNameFilter(f.Right)}
	case *notExpr:
		return &notExpr{X: mapUserNameFilter(f.X)}
	case *compareExpr:
		if s, isString := f.Value.(string); isString && f.Op == "eq" && f.Path.key() == "username" && coreAttr(f.Path, schemaUser) {
			if name, ok := UserName(s); ok {
				return &compareExpr{Path: f.Path, Op: f.Op, Value: name}
			}
		}
	}
	return f
}

// userNameEq reports whether f is exactly `userName eq "name"` with a
// valid name.
func userNameEq(f filterNode) (string, bool) {
	c, ok := f.(*compareExpr)
	if !ok || c.Op != "eq" || c.Path.key() != "username" || !coreAttr(c.Path, schemaUser) {
		return "", false
	}
	s, ok := c.Value.(string)
	return s, ok && nameRE.MatchString(s)
}

func (h *handler) getUser(w http.ResponseWriter, r *http.Request, id string) error {
	u, err := h.dir.GetUser(r.Context(), id)
	if err != nil {
		return err
	}
	return h.writeUser(w, r, http.StatusOK, u)
}

func (h *handler) createUser(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	body, err := readObject(w, r, schemaUser)
	if err != nil {
		return err
	}
	u := &User{Active: true}
	if err := userBody(u, body); err != nil {
		return err
	}
	unlock, err := h.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if err := h.userNameFree(ctx, u.UserName, ""); err != nil {
		return err
	}
	now := h.now()
	u.ID, u.Created, u.LastModified, u.Version = h.newID(), now, now, 1
	if err := h.dir.CreateUser(ctx, u); err != nil {
		return err
	}
	h.logger.InfoContext(ctx, "scim user created", "id", u.ID, "user", u.UserName, "active", u.Active)
	return h.writeUser(w, r, http.StatusCreated, u)
}

func (h *handler) replaceUser(w http.ResponseWriter, r *http.Request, id string) error {
	body, err := readObject(w, r, schemaUser)
	if err != nil {
		return err
	}
	return h.updateUser(w, r, id, func(old *User) (*User, error) {
		// Attributes left out are cleared, except active: a PUT that
		// omits it must not reactivate a deprovisioned user.
		u := &User{ID: old.ID, Active: old.Active, Groups: old.Groups, Created: old.Created, Version: old.Version}
		return u, userBody(u, body)
	})
}

func (h *handler) patchUser(w http.ResponseWriter, r *http.Request, id string) error {
	ops, err := readPatch(w, r)
	if err != nil {
		return err
	}
	return h.updateUser(w, r, id, func(old *User) (*User, error) {
		u := cloneUser(old)
		for _, op := range ops {
			if err := applyUserOp(u, op); err != nil {
				return nil, err
			}
		}
		return u, nil
	})
}

func applyUserOp(u *User, op patchOp) error {
	return applyOp(u.ID, op, func(op string, p *patchPath, raw json.RawMessage) error { return setUserAttr(u, op, p, raw) })
}

// applyOp applies one PATCH operation to the resource with id through set:
// with a path, to that attribute; without, to each attribute of the value
// (a matching "id" is allowed and ignored).
func applyOp(id string, op patchOp, set func(op string, p *patchPath, raw json.RawMessage) error) error {
	if op.Path == "" {
		if op.Op == "remove" {
			return badRequest("noTarget", "remove needs a path")
		}
		return applyObject(op.Value, op.Op, func(k string, raw json.RawMessage) bool {
			return strings.EqualFold(k, "id") && string(raw) == jsonString(id)
		}, set)
	}
	p, err := parsePath(op.Path)
	if err != nil {
		return badRequest("invalidPath", "invalid path: %v", err)
	}
	return set(op.Op, p, op.Value)
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// updateUser reads the user, applies change and stores the result if it
// differs.
func (h *handler) updateUser(w http.ResponseWriter, r *http.Request, id string, change func(*User) (*User, error)) error {
	ctx := r.Context()
	unlock, err := h.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	old, err := h.dir.GetUser(ctx, id)
	if err != nil {
		return err
	}
	if err := checkIfMatch(r, old.Version); err != nil {
		return err
	}
	u, err := change(old)
	if err != nil {
		return err
	}
	if sameUser(old, u) {
		return h.writeUser(w, r, http.StatusOK, old)
	}
	if u.UserName != old.UserName {
		if err := h.userNameFree(ctx, u.UserName, u.ID); err != nil {
			return err
		}
	}
	u.LastModified = h.now()
	u.Version = old.Version + 1
	if err := h.dir.ReplaceUser(ctx, u); err != nil {
		return err
	}
	switch {
	case old.Active && !u.Active:
		h.logger.InfoContext(ctx, "scim user deactivated", "id", u.ID, "user", u.UserName)
	case !old.Active && u.Active:
		h.logger.InfoContext(ctx, "scim user reactivated", "id", u.ID, "user", u.UserName)
	default:
		h.logger.InfoContext(ctx, "scim user updated", "id", u.ID, "user", u.UserName)
	}
	return h.writeUser(w, r, http.StatusOK, u)
}

func (h *handler) deleteUser(w http.ResponseWriter, r *http.Request, id string) error {
	ctx := r.Context()
	unlock, err := h.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	old, err := h.dir.GetUser(ctx, id)
	if err != nil {
		return err
	}
	if err := checkIfMatch(r, old.Version); err != nil {
		return err
	}
	if err := h.dir.DeleteUser(ctx, id); err != nil {
		return err
	}
	h.logger.InfoContext(ctx, "scim user deleted", "id", id, "user", old.UserName)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
