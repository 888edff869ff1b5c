"""The Traefik middleware plugin that answers a request pinned to a revision the deployment does not serve.

Used only by `_traefik_config` (the plugin's name, in the static and dynamic configuration) and
`traefik.py` (which writes the files before it starts Traefik). Pure: constants and a function that
returns file contents; no I/O here.

Why a plugin: a request to /d/NAME/ whose `X-Rollwise-Revision` header names a revision without a backend
in the table must get a 404 that says so, not a share of the weighted split. Traefik can route it (a
router with `HeaderRegexp` below the per-revision routers) but has no built-in way to answer with a body
naming the header's value: a service without servers answers 503 "no available server",
`noop@internal` answers 418 with no body, and the `errors` middleware can rewrite the status but only
fetches a page from another server with the URL, never the header. A local plugin (Go source
interpreted by Traefik's embedded Yaegi, loaded once at start from `./plugins-local/src/<module>` of
Traefik's working directory, no network) answers inside Traefik itself: it survives a restart of the
rollwise server like the rest of the routing table, and needs no extra process or port.

The plugin's name carries a digest of its files, so a Traefik running an older version of the source has
a different static configuration and is replaced rather than adopted.
"""

from __future__ import annotations

import hashlib

MODULE_NAME = "rollwise.local/revisionnotfound"
"""The Go module path; the files live under plugins-local/src/<MODULE_NAME>/ in Traefik's working dir."""
PLUGINS_DIR = "plugins-local"

GO_SOURCE = r"""// Package revisionnotfound answers a request pinned by its X-Rollwise-Revision header to a revision the
// deployment does not serve: 404 with {"error": "revision.not_found", "message": "..."}.
// Written by rollwise (rollwise/traffic/_traefik_plugin.py); Traefik interprets it (Yaegi).
package revisionnotfound

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"
	"strings"
)

// Config is the middleware's dynamic configuration, written by rollwise for each deployment.
type Config struct {
	Deployment string   `json:"deployment,omitempty"`
	Header     string   `json:"header,omitempty"`
	Revisions  []string `json:"revisions,omitempty"`
}

// CreateConfig returns the default configuration.
func CreateConfig() *Config {
	return &Config{Header: "X-Rollwise-Revision"}
}

type notFound struct {
	deployment string
	header     string
	serving    string
}

var wellFormed = regexp.MustCompile(`^r[0-9]+$`)

// New builds the handler; it never calls the next handler.
func New(_ context.Context, _ http.Handler, config *Config, _ string) (http.Handler, error) {
	serving := "none"
	if len(config.Revisions) > 0 {
		serving = strings.Join(config.Revisions, ", ")
	}
	return &notFound{deployment: config.Deployment, header: config.Header, serving: serving}, nil
}

func (h *notFound) ServeHTTP(rw http.ResponseWriter, req *http.Request) {
	value := req.Header.Get(h.header)
	if len(value) > 64 {
		value = value[:64] + "..."
	}
	message := "deployment " + h.deployment + " has no ready route of revision " + value + " (serving " + h.serving + ")"
	if !wellFormed.MatchString(value) {
		message = "deployment " + h.deployment + " has no revision " + strconv.Quote(value) + ": " + h.header +
			" values look like r1, case-sensitive (serving " + h.serving + ")"
	}
	body, _ := json.Marshal(map[string]string{"error": "revision.not_found", "message": message})
	body = append(body, '\n')
	rw.Header().Set("Content-Type", "application/json")
	rw.Header().Set("Content-Length", strconv.Itoa(len(body)))
	rw.WriteHeader(http.StatusNotFound)
	_, _ = rw.Write(body)
}
"""

GO_MOD = f"module {MODULE_NAME}\n\ngo 1.22\n"

MANIFEST = f"""displayName: rollwise revision not found
type: middleware
import: {MODULE_NAME}
summary: 404 for a request pinned to a revision the deployment does not serve
testData:
  deployment: demo
  header: X-Rollwise-Revision
  revisions: [r1]
"""


def files() -> dict[str, str]:
    """Path under Traefik's working directory -> file content."""
    base = f"{PLUGINS_DIR}/src/{MODULE_NAME}"
    return {
        f"{base}/revisionnotfound.go": GO_SOURCE,
        f"{base}/go.mod": GO_MOD,
        f"{base}/.traefik.yml": MANIFEST,
    }


def _digest() -> str:
    h = hashlib.sha256()
    for path, text in sorted(files().items()):
        h.update(path.encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()[:8]


PLUGIN_NAME = f"rollwise-revision-{_digest()}"
"""The plugin's name in `experimental.localPlugins` (static) and in the middlewares that use it (dynamic)."""
