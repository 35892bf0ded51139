package dynamo

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

func sampleItem() map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		"s":    &types.AttributeValueMemberS{Value: "a\"b\\c\n\u2028ü"},
		"n":    &types.AttributeValueMemberN{Value: "12345678901234567890123456789012345678"},
		"f":    &types.AttributeValueMemberN{Value: "-1.5E+10"},
		"b":    &types.AttributeValueMemberB{Value: []byte{0, 1, 0xff}},
		"t":    &types.AttributeValueMemberBOOL{Value: true},
		"null": &types.AttributeValueMemberNULL{Value: true},
		"ss":   &types.AttributeValueMemberSS{Value: []string{"x", "y"}},
		"ns":   &types.AttributeValueMemberNS{Value: []string{"1", "2.5"}},
		"bs":   &types.AttributeValueMemberBS{Value: [][]byte{{1}, {2}}},
		"l":    &types.AttributeValueMemberL{Value: []types.AttributeValue{&types.AttributeValueMemberN{Value: "0"}, &types.AttributeValueMemberS{Value: ""}}},
		"m": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{
			"z": &types.AttributeValueMemberS{Value: "last"}, "a": &types.AttributeValueMemberS{Value: "first"},
		}},
	}
}

func TestAppendItemPlainJSON(t *testing.T) {
	got, err := AppendItem(nil, sampleItem(), FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"b":"AAH/","bs":["AQ==","Ag=="],"f":-1.5E+10,"l":[0,""],"m":{"a":"first","z":"last"},` +
		`"n":12345678901234567890123456789012345678,"ns":[1,2.5],"null":null,"s":"a\"b\\c\n\u2028ü","ss":["x","y"],"t":true}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	// Numbers stay exact: a decoder with UseNumber sees all 38 digits.
	dec := json.NewDecoder(strings.NewReader(string(got)))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	if m["n"].(json.Number).String() != "12345678901234567890123456789012345678" {
		t.Errorf("number changed: %v", m["n"])
	}
}

func TestAppendItemDynamoDBJSONRoundTrips(t *testing.T) {
	item := sampleItem()
	got, err := AppendItem(nil, item, FormatDynamoDBJSON)
	if err != nil {
		t.Fatal(err)
	}
	back, err := attributevalue.UnmarshalMapJSON(got)
	if err != nil {
		t.Fatalf("%s does not decode: %v", got, err)
	}
	again, err := AppendItem(nil, back, FormatDynamoDBJSON)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(got) {
		t.Errorf("round trip changed the item:\n%s\n%s", got, again)
	}
	if !strings.HasPrefix(string(got), `{"b":{"B":"AAH/"},"bs":{"BS":["AQ==","Ag=="]},"f":{"N":"-1.5E+10"}`) {
		t.Errorf("unexpected encoding %s", got)
	}
}

func TestAppendStringIsValidJSON(t *testing.T) {
	for _, s := range []string{"", "plain", "tab\tnl\nret\r", "\x00\x01\x1f\x7f", "\b\f", "quote\"back\\",
		"\u2028\u2029", "☃ naïve", "bad \xff utf8 \xc3", "<script>&"} {
		b := appendString(nil, s)
		var back string
		if err := json.Unmarshal(b, &back); err != nil {
			t.Errorf("%q encodes to invalid JSON %s: %v", s, b, err)
			continue
		}
		// Each invalid byte becomes one U+FFFD, as with encoding/json
		// (and as converting to []rune does).
		want := string([]rune(s))
		if back != want {
			t.Errorf("%q decodes back as %q, want %q", s, back, want)
		}
		if strings.ContainsAny(string(b), "\n\r\u2028\u2029") {
			t.Errorf("%q: encoding %q would break a JSON line", s, b)
		}
	}
}

func TestNumbersThatAreNotJSONAreRefused(t *testing.T) {
	for _, n := range []string{"1", "-0.5", "1e5", "1E-5", "0", "123.456e+78"} {
		if !validJSONNumber(n) {
			t.Errorf("%s refused", n)
		}
	}
	for _, n := range []string{"", "+1", ".5", "1.", "01", "1e", "--1", "NaN", "1 "} {
		if validJSONNumber(n) {
			t.Errorf("%q accepted", n)
		}
	}
	_, err := AppendItem(nil, map[string]types.AttributeValue{"x": &types.AttributeValueMemberN{Value: ".5"}}, FormatJSON)
	if err == nil || !strings.Contains(err.Error(), "dynamodb-json") {
		t.Errorf("err = %v", err)
	}
}

func TestParseValuesAndNames(t *testing.T) {
	v, err := ParseValues(`{":pk": {"S": "a"}, ":n": {"N": "5"}}`)
	if err != nil || len(v) != 2 {
		t.Fatalf("%v %v", v, err)
	}
	for _, bad := range []string{`[1]`, `{":x": 5}`, `{":x": {}}`, `not json`} {
		if _, err := ParseValues(bad); err == nil {
			t.Errorf("ParseValues(%s) accepted", bad)
		}
	}
	if _, err := ParseNames(`{"#s": "status"}`); err != nil {
		t.Error(err)
	}
	if _, err := ParseNames(`{"#s": 1}`); err == nil {
		t.Error("ParseNames accepted a number")
	}
	if err := (Spec{Table: "t", Scan: true, Segments: 1, Values: map[string]types.AttributeValue{"x": nil}}).Validate(); err == nil {
		t.Error("a placeholder without ':' was accepted")
	}
}
