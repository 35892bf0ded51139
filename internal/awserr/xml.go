package awserr

import (
	"bytes"
	"context"
	"encoding/xml"
	"io"
	"regexp"
	"strings"

	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// The regexps read what the XML decoder cannot: a body cut short, or a
// snapshot that starts in the middle of one.
var (
	xmlCode    = regexp.MustCompile(`<Code>([^<]{1,128})</Code>`)
	xmlMessage = regexp.MustCompile(`<Message>(?:<!\[CDATA\[)?([^<\]]{1,1000})`)
)

// XMLError reads the first <Code> and <Message> of an AWS query-style XML
// error body, wherever they are nested (<ErrorResponse><Error> or
// <Errors><Error>). moto answers an IAM denial that way (HTTP 403,
// <Code>AccessDenied</Code>) where DynamoDB and Secrets Manager answer
// JSON, and the JSON deserializer then keeps only a snapshot of the body.
func XMLError(body []byte) (code, msg string, ok bool) {
	dec := xml.NewDecoder(bytes.NewReader(body))
	var cur string
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		switch t := tok.(type) {
		case xml.StartElement:
			cur = t.Name.Local
		case xml.EndElement:
			cur = ""
		case xml.CharData:
			switch {
			case cur == "Code" && code == "":
				code = strings.TrimSpace(string(t))
			case cur == "Message" && msg == "":
				msg = strings.TrimSpace(string(t))
			}
		}
	}
	if code == "" {
		if m := xmlCode.FindSubmatch(body); m != nil {
			code = strings.TrimSpace(string(m[1]))
		}
	}
	if msg == "" {
		if m := xmlMessage.FindSubmatch(body); m != nil {
			msg = strings.TrimSpace(string(m[1]))
		}
	}
	return code, msg, code != ""
}

// AddXMLErrorMiddleware makes a JSON-protocol client read XML error
// bodies too, so the code survives as a smithy.APIError instead of a
// decode failure whose snapshot [Classify] must dig in. Add it to a
// client's APIOptions.
func AddXMLErrorMiddleware(stack *middleware.Stack) error {
	return stack.Deserialize.Insert(xmlErrorMiddleware{}, "OperationDeserializer", middleware.After)
}

type xmlErrorMiddleware struct{}

func (xmlErrorMiddleware) ID() string { return "KrbopsXMLErrorBody" }

func (xmlErrorMiddleware) HandleDeserialize(ctx context.Context, in middleware.DeserializeInput, next middleware.DeserializeHandler) (
	middleware.DeserializeOutput, middleware.Metadata, error,
) {
	out, md, err := next.HandleDeserialize(ctx, in)
	if err != nil {
		return out, md, err
	}
	resp, ok := out.RawResponse.(*smithyhttp.Response)
	if !ok || resp.StatusCode < 400 || resp.Body == nil {
		return out, md, err
	}
	// Error bodies are small; the cap only guards against a runaway one.
	body, rerr := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if rerr != nil || !bytes.HasPrefix(bytes.TrimSpace(body), []byte("<")) {
		return out, md, err
	}
	code, msg, ok := XMLError(body)
	if !ok {
		return out, md, err
	}
	fault := smithy.FaultClient
	if resp.StatusCode >= 500 {
		fault = smithy.FaultServer
	}
	// The SDK's response-error middleware, further out, adds the status
	// and the request id.
	return out, md, &smithy.GenericAPIError{Code: code, Message: msg, Fault: fault}
}
