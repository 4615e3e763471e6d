// Command gojson records how Go's encoding/json decodes request bodies into the structs dockerd
// decodes them into, for the differential test in crates/proxy/src/gojson.rs.
//
// Regenerate answers.json after editing cases.json (standard library only, any Go >= 1.19):
//
//	cd crates/proxy/testdata/gojson && go run main.go
//
// cases.json is an array of {"name", "kind": "auth"|"service", "body"} (or "body_hex" for bodies
// that are not UTF-8), plus "we_refuse": "<why>" on the cases where our reader intentionally
// fails closed although Go accepts. answers.json repeats each case with Go's result.
//
// The structs hold only the fields the gate reads, with moby's field types and json tags
// (api/types/registry.AuthConfig, api/types/swarm.ServiceSpec/TaskSpec/ContainerSpec,
// api/types/swarm/runtime.PluginSpec). dockerd's structs have more fields; a wrong-typed value
// for one of those makes dockerd refuse a body we would pass, never the other way round.
package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"log"
	"os"
	"strings"
	"unicode"
)

type AuthConfig struct {
	ServerAddress string `json:"serveraddress,omitempty"`
}

type ServiceSpec struct {
	TaskTemplate TaskSpec `json:",omitempty"`
}

type RuntimeType string

type TaskSpec struct {
	ContainerSpec *ContainerSpec `json:",omitempty"`
	PluginSpec    *PluginSpec    `json:",omitempty"`
	Runtime       RuntimeType    `json:",omitempty"`
}

type ContainerSpec struct {
	Image string `json:",omitempty"`
}

type PluginSpec struct {
	Remote string `json:"remote,omitempty"`
}

type testCase struct {
	Name     string `json:"name"`
	Kind     string `json:"kind"`
	Body     string `json:"body,omitempty"`
	BodyHex  string `json:"body_hex,omitempty"`
	WeRefuse string `json:"we_refuse,omitempty"`
}

type answer struct {
	testCase
	OK             bool            `json:"ok"`
	Error          string          `json:"error,omitempty"`
	ServerAddress  *string         `json:"serveraddress,omitempty"`
	Runtime        *string         `json:"runtime,omitempty"`
	ContainerImage json.RawMessage `json:"container_image,omitempty"`
	PluginRemote   json.RawMessage `json:"plugin_remote,omitempty"`
}

// checkFolds verifies the claim key_matches relies on: the only non-ASCII runes whose
// unicode.SimpleFold orbit holds an ASCII rune are U+017F (s) and U+212A (k). Go 1.19's
// encoding/json folds with bytes.EqualFold-like helpers, Go >= 1.21 with foldName (every rune to
// the smallest of its orbit, ASCII to upper case); for ASCII field names both reduce to this.
func checkFolds() {
	var found []rune
	for r := rune(0x80); r <= unicode.MaxRune; r++ {
		// Orbits are short (at most 4 runes); the bound only guards against a broken table.
		f := unicode.SimpleFold(r)
		for i := 0; f != r && i < 16; i++ {
			if f < 0x80 {
				found = append(found, r)
				break
			}
			f = unicode.SimpleFold(f)
		}
	}
	if len(found) != 2 || found[0] != 0x017F || found[1] != 0x212A {
		log.Fatalf("non-ASCII runes folding into ASCII changed: %U", found)
	}
}

func strOrNull(present bool, s string) json.RawMessage {
	if !present {
		return json.RawMessage("null")
	}
	b, err := json.Marshal(s)
	if err != nil {
		log.Fatal(err)
	}
	return b
}

func main() {
	checkFolds()
	raw, err := os.ReadFile("cases.json")
	if err != nil {
		log.Fatal(err)
	}
	var cases []testCase
	if err := json.Unmarshal(raw, &cases); err != nil {
		log.Fatal(err)
	}
	seen := map[string]bool{}
	var out bytes.Buffer
	out.WriteString("[\n")
	for i, c := range cases {
		if seen[c.Name] {
			log.Fatalf("duplicate case name %q", c.Name)
		}
		seen[c.Name] = true
		body := c.Body
		if c.BodyHex != "" {
			b, err := hex.DecodeString(c.BodyHex)
			if err != nil {
				log.Fatalf("%s: %v", c.Name, err)
			}
			body = string(b)
		}
		a := answer{testCase: c}
		dec := json.NewDecoder(strings.NewReader(body))
		switch c.Kind {
		case "auth":
			var v AuthConfig
			err = dec.Decode(&v)
			if err == nil {
				a.ServerAddress = &v.ServerAddress
			}
		case "service":
			var v ServiceSpec
			err = dec.Decode(&v)
			if err == nil {
				t := v.TaskTemplate
				rt := string(t.Runtime)
				a.Runtime = &rt
				a.ContainerImage = strOrNull(t.ContainerSpec != nil, "")
				if t.ContainerSpec != nil {
					a.ContainerImage = strOrNull(true, t.ContainerSpec.Image)
				}
				a.PluginRemote = strOrNull(t.PluginSpec != nil, "")
				if t.PluginSpec != nil {
					a.PluginRemote = strOrNull(true, t.PluginSpec.Remote)
				}
			}
		default:
			log.Fatalf("%s: unknown kind %q", c.Name, c.Kind)
		}
		a.OK = err == nil
		if err != nil {
			a.Error = err.Error()
		}
		var line bytes.Buffer
		enc := json.NewEncoder(&line)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(a); err != nil {
			log.Fatal(err)
		}
		out.Write(bytes.TrimRight(line.Bytes(), "\n"))
		if i+1 < len(cases) {
			out.WriteString(",")
		}
		out.WriteString("\n")
	}
	out.WriteString("]\n")
	if err := os.WriteFile("answers.json", out.Bytes(), 0o644); err != nil {
		log.Fatal(err)
	}
}
