package gateway

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestDurationYAML(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{5 * time.Minute, "5m"},
		{time.Hour, "1h"},
		{90 * time.Minute, "1h30m"},
		{90 * time.Second, "1m30s"},
		{7 * 24 * time.Hour, "168h"},
		{1500 * time.Millisecond, "1.5s"},
		{0, "0s"},
	}
	for _, tc := range tests {
		b, err := yaml.Marshal(Duration(tc.d))
		if err != nil || strings.TrimSpace(string(b)) != tc.want {
			t.Errorf("yaml.Marshal(Duration(%s)) = %q, %v, want %q", tc.d, b, err, tc.want)
		}
		var back Duration
		if err := yaml.Unmarshal(b, &back); err != nil || time.Duration(back) != tc.d {
			t.Errorf("yaml.Unmarshal(%q) = %s, %v, want %s", b, time.Duration(back), err, tc.d)
		}
	}
}

// TestConfigYAMLRoundTrip: a Config written as YAML reads back as the
// same Config, whatever each field holds, so that tests and tools can
// write the configuration a gateway reads.
func TestConfigYAMLRoundTrip(t *testing.T) {
	var c Config
	fill(reflect.ValueOf(&c).Elem(), "")
	b, err := yaml.Marshal(c)
	if err != nil {
		t.Fatalf("yaml.Marshal(Config) = %v", err)
	}
	got := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("decoding the marshalled Config = %v\n%s", err, b)
	}
	if !reflect.DeepEqual(got, c) {
		t.Errorf("Config after a YAML round trip =\n%+v\nwant\n%+v\nYAML:\n%s", got, c, b)
	}

	// The defaults, as LoadConfig reads them.
	b, err = yaml.Marshal(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "retry_for: 5m\n") {
		t.Errorf("yaml.Marshal(DefaultConfig()) lacks %q:\n%s", "retry_for: 5m", b)
	}
	// Empty lists come back empty rather than nil: compare as YAML.
	got = Config{}
	if err := yaml.Unmarshal(b, &got); err != nil {
		t.Fatalf("decoding the marshalled DefaultConfig = %v", err)
	}
	if again, _ := yaml.Marshal(got); !bytes.Equal(again, b) {
		t.Errorf("DefaultConfig after a YAML round trip =\n%s\nwant\n%s", again, b)
	}
}

// fill sets every field of v that the file holds to a value other than
// its zero value and its default, named after the field where it is a
// string.
func fill(v reflect.Value, path string) {
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			f := v.Type().Field(i)
			if f.Tag.Get("yaml") == "-" {
				continue
			}
			fill(v.Field(i), path+"."+f.Name)
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), path)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0), path+"[0]")
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k, path+".key")
		fill(e, path+".value")
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.String:
		v.SetString("x" + strings.ReplaceAll(path, ".", "-"))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64:
		if v.Type() == reflect.TypeOf(Duration(0)) {
			v.SetInt(int64(93 * time.Second))
		} else {
			v.SetInt(7)
		}
	case reflect.Uint64:
		v.SetUint(7)
	default:
		panic("fill: no value for " + path + " of kind " + v.Kind().String())
	}
}
