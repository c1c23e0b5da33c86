package body

// Vocab is a fixed set of strings that Parse returns without allocating
// when a key or string value of the body equals one of them: the member
// names and enum values a schema defines, the configured model names. It
// is built once per configuration (or schema reload) and never changed, so
// it is safe for concurrent use, and its strings live as long as the
// configuration that built it, not as long as any request.
type Vocab struct {
	words map[string]word
}

// word is one string of a Vocab and its boxed form, so that a value costs
// no allocation either.
type word struct {
	s string
	v any
}

// vocabMaxLen bounds the strings a Vocab holds and looks up: longer body
// strings (prompts) are not hashed only to miss.
const vocabMaxLen = 64

// NewVocab returns a Vocab of words; words longer than 64 bytes, and
// repeats, are left out.
func NewVocab(words ...string) *Vocab {
	v := &Vocab{words: make(map[string]word, len(words))}
	for _, s := range words {
		if len(s) <= vocabMaxLen {
			v.words[s] = word{s: s, v: s}
		}
	}
	return v
}

// lookup finds b in v (nil finds nothing) without allocating.
func (v *Vocab) lookup(b []byte) (word, bool) {
	if v == nil || len(b) > vocabMaxLen {
		return word{}, false
	}
	w, ok := v.words[string(b)]
	return w, ok
}
