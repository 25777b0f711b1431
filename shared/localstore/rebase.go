package localstore

import (
	"bytes"
	"encoding/json"
	"strings"
)

// ObjectsPath is where the portal serves objects and documents, the path
// of every local event's pointers (pipeline.Pipeline's ObjectURLBase), in
// one place: the portal's route, the base local mode gives the pipeline,
// and Rebase, which finds pointers by it.
const ObjectsPath = "/objects/"

// Rebase points the page's events at base, the portal's /objects/ URL as
// it is now: an event's pointers name the portal of its time
// (http://127.0.0.1:8080/objects/<key>), which is gone once the portal
// listens elsewhere. A pointer is a resource, or a detail's string whose
// property name ends in "Uri" (objectUri, metadataUri, resultUri, …, in
// study events' series too), that is an http(s) URL whose path begins
// with /objects/: its base is replaced, its key kept. The events as
// stored, logged and POSTed keep theirs; nothing else in them changes.
// An empty base leaves the page as it is.
func (p EventPage) Rebase(base string) {
	if base == "" {
		return
	}
	for i := range p.Events {
		p.Events[i].Event = rebaseEvent(p.Events[i].Event, base)
	}
}

func rebaseEvent(e Event, base string) Event {
	res := make([]string, len(e.Resources))
	for i, r := range e.Resources {
		res[i] = rebased(r, base)
	}
	e.Resources = res
	if !bytes.Contains(e.Detail, []byte(ObjectsPath)) {
		return e
	}
	var d any
	if json.Unmarshal(e.Detail, &d) != nil {
		return e
	}
	olds := map[string]string{}
	collectPointers(d, "", base, olds)
	detail := e.Detail
	for old, repl := range olds {
		o, err1 := json.Marshal(old)
		n, err2 := json.Marshal(repl)
		if err1 != nil || err2 != nil {
			continue
		}
		detail = bytes.ReplaceAll(detail, o, n)
	}
	e.Detail = detail
	return e
}

// collectPointers maps each pointer in v (under property name) that
// another base names to the same key under base.
func collectPointers(v any, name, base string, olds map[string]string) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			collectPointers(x, k, base, olds)
		}
	case []any:
		for _, x := range v {
			collectPointers(x, name, base, olds)
		}
	case string:
		if strings.HasSuffix(name, "Uri") {
			if r := rebased(v, base); r != v {
				olds[v] = r
			}
		}
	}
}

// rebased is the pointer u under base: u's key after the /objects/ that
// begins its path, when u is an http(s) URL; else u.
func rebased(u, base string) string {
	rest, ok := strings.CutPrefix(u, "http://")
	if !ok {
		if rest, ok = strings.CutPrefix(u, "https://"); !ok {
			return u
		}
	}
	slash := strings.IndexByte(rest, '/')
	if slash < 0 || !strings.HasPrefix(rest[slash:], ObjectsPath) {
		return u
	}
	return base + rest[slash+len(ObjectsPath):]
}
