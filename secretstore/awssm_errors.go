package secretstore

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// classifyAWS maps an SDK error to a kind (DESIGN.md "Error classes"). The
// SDK has already retried what its retryer deems retryable, so a transient
// kind here means the retry budget is spent.
func classifyAWS(err error) error {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "AccessDeniedException", "AccessDenied",
			// KMS refusing the secret's key: a key-policy problem, as
			// permanent as an IAM denial.
			"DecryptionFailure", "EncryptionFailure", "KMSAccessDeniedException":
			return ErrPermission
		case "ResourceNotFoundException":
			return ErrNotFound
		case "ExpiredTokenException", "ExpiredToken", "UnrecognizedClientException",
			"InvalidClientTokenId", "InvalidSignatureException", "SignatureDoesNotMatch",
			"IncompleteSignature", "MissingAuthenticationToken", "RequestExpired":
			return ErrAuth
		case "ThrottlingException", "Throttling", "TooManyRequestsException",
			"RequestLimitExceeded", "InternalServiceError", "InternalFailure",
			"ServiceUnavailable", "RequestTimeout", "RequestTimeoutException":
			return ErrTransient
		case "ResourceExistsException", "InvalidRequestException", "PreconditionNotMetException":
			return ErrConflict
		}
	}
	var se *smithyhttp.RequestSendError
	var ne net.Error
	if errors.As(err, &se) || errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) {
		return ErrTransient
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		switch code := re.HTTPStatusCode(); {
		case code == http.StatusForbidden:
			// A denial whose body was not the service's JSON (a proxy, an
			// AWS look-alike): refusing to retry is the safe reading.
			return ErrPermission
		case code == http.StatusNotFound:
			return ErrNotFound
		case code == http.StatusTooManyRequests, code >= 500:
			return ErrTransient
		}
	}
	return nil
}

func awsHint(kind error, op, secretID string) string {
	action := map[string]string{
		"get":         "secretsmanager:GetSecretValue",
		"get-version": "secretsmanager:GetSecretValue",
		"versions":    "secretsmanager:ListSecretVersionIds",
		"seed":        "secretsmanager:DescribeSecret, ListSecretVersionIds, GetSecretValue and PutSecretValue",
		"put-pending": "secretsmanager:DescribeSecret, ListSecretVersionIds, GetSecretValue and PutSecretValue",
		"promote":     "secretsmanager:DescribeSecret, ListSecretVersionIds and UpdateSecretVersionStage",
		"check":       "secretsmanager:DescribeSecret and ListSecretVersionIds",
	}[op]
	switch kind {
	case ErrPermission:
		return "grant " + action + " on secret " + secretID + " (and kms:Decrypt/GenerateDataKey on its KMS key); see docs/secret-store.md"
	case ErrAuth:
		return "refresh the AWS credentials (aws sso login, or renew the session token) and run again"
	case ErrNotFound:
		if op == "seed" || op == "put-pending" || op == "check" {
			return "create secret " + secretID + " (its KMS key and resource policy are the account owner's choice): aws secretsmanager create-secret --name " + secretID
		}
	case ErrTransient:
		return "Secrets Manager is throttling or failing; retry later"
	}
	return ""
}

// addXMLErrorMiddleware reads error bodies the JSON deserializer cannot.
// Secrets Manager answers errors in JSON, but some AWS look-alikes and
// proxies answer an IAM denial as a query-protocol XML ErrorResponse
// (moto: 403 with <ErrorResponse><Errors><Error><Code>AccessDenied…). The
// JSON deserializer then reports only a decode failure, and the code that
// says "denied" versus "expired credentials" is lost.
func addXMLErrorMiddleware(stack *middleware.Stack) error {
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
	code, msg, ok := xmlErrorCode(body)
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

// xmlErrorCode finds the first <Code> and <Message> of an XML error body,
// wherever they are nested (<ErrorResponse><Error> or <Errors><Error>).
func xmlErrorCode(body []byte) (code, msg string, ok bool) {
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
	return code, msg, code != ""
}
