package kdcops

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/jcmturner/gokrb5/v8/client"
	"github.com/jcmturner/gokrb5/v8/spnego"
)

// SPNEGOGet performs an HTTP GET through gokrb5's SPNEGO client, logged in
// with entries (one kvno: see GokrbKeytab).
// It returns the HTTP status. A fresh client and config per call: neither
// is safe to share between goroutines (DESIGN.md).
func SPNEGOGet(ctx context.Context, cfg *Config, principal, url string, entries []KeytabEntry, timeout time.Duration, tlsCfg *tls.Config, log *slog.Logger) (int, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	gcfg, err := cfg.Clone()
	if err != nil {
		return 0, err
	}
	kt, err := GokrbKeytab(entries)
	if err != nil {
		return 0, err
	}
	name, realm := SplitPrincipal(principal)
	cl := client.NewWithKeytab(name, realm, kt, gcfg, client.DisablePAFXFAST(true))
	defer cl.Destroy()
	log.LogAttrs(ctx, slog.LevelInfo, "spnego login", slog.String("principal", principal))
	if err := cl.Login(); err != nil {
		return 0, fmt.Errorf("spnego client login as %s failed: %s", principal, firstLineOf(err.Error()))
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, fmt.Errorf("url %s: %w", url, err)
	}
	hc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, DisableKeepAlives: true, TLSClientConfig: tlsCfg}}
	log.LogAttrs(ctx, slog.LevelInfo, "spnego request", slog.String("url", url))
	resp, err := spnego.NewClient(cl, hc, "").Do(req)
	if err != nil {
		log.LogAttrs(ctx, slog.LevelWarn, "spnego error", slog.String("url", url), slog.String("error", firstLineOf(err.Error())))
		return 0, fmt.Errorf("%s", firstLineOf(err.Error()))
	}
	resp.Body.Close()
	log.LogAttrs(ctx, slog.LevelInfo, "spnego reply", slog.String("url", url), slog.Int("status", resp.StatusCode))
	return resp.StatusCode, nil
}

func firstLineOf(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			return s[:i]
		}
	}
	return s
}
