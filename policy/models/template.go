package models

import "strings"

// template is a compiled path template such as
// /v2/models/{model}/versions/{version}/infer or /v1/models/{model}:predict.
type template struct {
	raw   string
	parts []part
	named bool // has {model}
}

// part is a literal, or a placeholder (literal == "") capturing one path
// segment up to the next literal.
type part struct {
	literal string
	model   bool // the placeholder is {model}
}

func compileTemplate(t string) template {
	tp := template{raw: t}
	for t != "" {
		i := strings.IndexByte(t, '{')
		if i < 0 {
			tp.parts = append(tp.parts, part{literal: t})
			break
		}
		if i > 0 {
			tp.parts = append(tp.parts, part{literal: t[:i]})
		}
		end := strings.IndexByte(t, '}')
		name := t[i+1 : end]
		tp.parts = append(tp.parts, part{model: name == "model"})
		tp.named = tp.named || name == "model"
		t = t[end+1:]
	}
	return tp
}

// match reports whether path fits the template and returns the {model}
// segment. A placeholder never spans a "/", and stops at the first byte of
// the literal after it (so {model}:predict stops at ":").
func (tp template) match(path string) (model string, ok bool) {
	for i, p := range tp.parts {
		if p.literal != "" {
			if !strings.HasPrefix(path, p.literal) {
				return "", false
			}
			path = path[len(p.literal):]
			continue
		}
		end := strings.IndexByte(path, '/')
		if end < 0 {
			end = len(path)
		}
		if i+1 < len(tp.parts) {
			next := tp.parts[i+1].literal[0]
			j := strings.IndexByte(path[:end], next)
			if next != '/' {
				if j < 0 {
					return "", false
				}
				end = j
			}
		}
		if end == 0 {
			return "", false
		}
		if p.model {
			model = path[:end]
		}
		path = path[end:]
	}
	return model, path == ""
}
