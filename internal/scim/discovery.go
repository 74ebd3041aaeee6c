package scim

import (
	"net/http"
	"strings"
)

// The discovery endpoints (RFC 7644 section 4) describe what this service
// provider supports.

func (h *handler) serviceProviderConfig(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]any{
		"schemas":          []any{schemaSPC},
		"documentationUri": "https://github.com/mayflyhq/mayfly/blob/main/docs/scim.md",
		"patch":            map[string]any{"supported": true},
		"bulk":             map[string]any{"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
		"filter":           map[string]any{"supported": true, "maxResults": maxResults},
		"changePassword":   map[string]any{"supported": false},
		"sort":             map[string]any{"supported": false},
		"etag":             map[string]any{"supported": true},
		"authenticationSchemes": []any{map[string]any{
			"type":        "oauthbearertoken",
			"name":        "Bearer token",
			"description": "A static bearer token in the Authorization header; Mayfly stores its SHA-256.",
			"primary":     true,
		}},
		"meta": map[string]any{
			"resourceType": "ServiceProviderConfig",
			"location":     baseURL(r) + "/ServiceProviderConfig",
		},
	})
	return nil
}

func resourceTypeJSON(base, name string) map[string]any {
	rt := map[string]any{
		"schemas":  []any{schemaRT},
		"id":       name,
		"name":     name,
		"endpoint": "/" + name + "s",
		"meta": map[string]any{
			"resourceType": "ResourceType",
			"location":     base + "/ResourceTypes/" + name,
		},
	}
	if name == "User" {
		rt["description"] = "A person who can request access"
		rt["schema"] = schemaUser
	} else {
		rt["description"] = "A set of users, named for access policies"
		rt["schema"] = schemaGroup
	}
	return rt
}

func (h *handler) resourceTypes(w http.ResponseWriter, r *http.Request) error {
	base := baseURL(r)
	items := []any{resourceTypeJSON(base, "User"), resourceTypeJSON(base, "Group")}
	writeJSON(w, http.StatusOK, map[string]any{
		"schemas": []any{schemaList}, "totalResults": len(items), "startIndex": 1,
		"itemsPerPage": len(items), "Resources": items,
	})
	return nil
}

func (h *handler) resourceType(w http.ResponseWriter, r *http.Request, id string) error {
	switch {
	case strings.EqualFold(id, "User"):
		writeJSON(w, http.StatusOK, resourceTypeJSON(baseURL(r), "User"))
	case strings.EqualFold(id, "Group"):
		writeJSON(w, http.StatusOK, resourceTypeJSON(baseURL(r), "Group"))
	default:
		return &scimError{status: http.StatusNotFound, detail: "no such resource type"}
	}
	return nil
}

// attr describes a schema attribute (RFC 7643 section 7).
func attr(name, typ, desc string, opts ...func(map[string]any)) map[string]any {
	a := map[string]any{
		"name": name, "type": typ, "multiValued": false, "description": desc,
		"required": false, "caseExact": false, "mutability": "readWrite",
		"returned": "default", "uniqueness": "none",
	}
	for _, o := range opts {
		o(a)
	}
	return a
}

func set(k string, v any) func(map[string]any) { return func(a map[string]any) { a[k] = v } }

func (h *handler) schemaJSON(base, id string) map[string]any {
	var s map[string]any
	if id == schemaUser {
		s = map[string]any{
			"id": schemaUser, "name": "User", "description": "User account",
			"attributes": []any{
				attr("userName", "string", "The Mayfly user name: lowercased, any @domain dropped.",
					set("required", true), set("uniqueness", "server")),
				attr("displayName", "string", "The name shown to people."),
				attr("active", "boolean", "False suspends the user and revokes their access."),
				attr("emails", "complex", "Email addresses; the first is primary.",
					set("multiValued", true), set("subAttributes", []any{
						attr("value", "string", "The address."),
						attr("type", "string", "Always \"work\".", set("canonicalValues", []any{"work"})),
						attr("primary", "boolean", "Whether this is the primary address."),
					})),
				attr("groups", "complex", "The groups the user belongs to.",
					set("multiValued", true), set("mutability", "readOnly"), set("subAttributes", []any{
						attr("value", "string", "The group's id.", set("mutability", "readOnly")),
						attr("$ref", "reference", "The group's URI.", set("mutability", "readOnly"), set("referenceTypes", []any{"Group"})),
						attr("display", "string", "The group's displayName.", set("mutability", "readOnly")),
					})),
			},
		}
	} else {
		s = map[string]any{
			"id": schemaGroup, "name": "Group", "description": "Group",
			"attributes": []any{
				attr("displayName", "string", "The group's name; its Mayfly name is derived from it.",
					set("required", true), set("uniqueness", "server")),
				attr("members", "complex", "The users in the group.",
					set("multiValued", true), set("subAttributes", []any{
						attr("value", "string", "The user's id.", set("caseExact", true), set("mutability", "immutable")),
						attr("$ref", "reference", "The user's URI.", set("mutability", "immutable"), set("referenceTypes", []any{"User"})),
						attr("type", "string", "Always \"User\".", set("mutability", "immutable"), set("canonicalValues", []any{"User"})),
					})),
			},
		}
	}
	s["schemas"] = []any{schemaSchema}
	s["meta"] = map[string]any{"resourceType": "Schema", "location": base + "/Schemas/" + id}
	return s
}

func (h *handler) schemas(w http.ResponseWriter, r *http.Request) error {
	base := baseURL(r)
	items := []any{h.schemaJSON(base, schemaUser), h.schemaJSON(base, schemaGroup)}
	writeJSON(w, http.StatusOK, map[string]any{
		"schemas": []any{schemaList}, "totalResults": len(items), "startIndex": 1,
		"itemsPerPage": len(items), "Resources": items,
	})
	return nil
}

func (h *handler) schema(w http.ResponseWriter, r *http.Request, id string) error {
	switch {
	case strings.EqualFold(id, schemaUser):
		writeJSON(w, http.StatusOK, h.schemaJSON(baseURL(r), schemaUser))
	case strings.EqualFold(id, schemaGroup):
		writeJSON(w, http.StatusOK, h.schemaJSON(baseURL(r), schemaGroup))
	default:
		return &scimError{status: http.StatusNotFound, detail: "no such schema"}
	}
	return nil
}
