package kdcops

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/beevik/ntp"
)

// SourceSample is a clock reading from a non-Kerberos time source (NTP, an
// AWS endpoint's HTTP Date).
type SourceSample struct {
	Source      string
	Offset      time.Duration // source time minus local time
	RTT         time.Duration
	Uncertainty time.Duration
	Stratum     int // NTP only
}

// NTPOffset queries an NTP server with SNTP. host may carry a port.
func NTPOffset(ctx context.Context, host string, timeout time.Duration, log *slog.Logger) (*SourceSample, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	// beevik/ntp takes no context; its dialer hook lets SIGINT close the
	// socket so a blocked read returns at once. Close, not a deadline: the
	// library sets its own deadline after dialling, which would undo a
	// cancel that came first.
	var stops []func() bool
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	dialer := func(local, remote string) (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "udp", remote)
		if err != nil {
			return nil, err
		}
		stops = append(stops, context.AfterFunc(ctx, func() { conn.Close() }))
		return conn, nil
	}
	log.LogAttrs(ctx, slog.LevelInfo, "ntp request", slog.String("server", host))
	resp, err := ntp.QueryWithOptions(host, ntp.QueryOptions{Timeout: timeout, Dialer: dialer})
	if err == nil {
		err = resp.Validate()
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		log.LogAttrs(ctx, slog.LevelWarn, "ntp error", slog.String("server", host), slog.String("error", err.Error()))
		return nil, fmt.Errorf("ntp server %s: %w", host, err)
	}
	log.LogAttrs(ctx, slog.LevelInfo, "ntp reply", slog.String("server", host),
		slog.Float64("offset_seconds", resp.ClockOffset.Seconds()), slog.Int("stratum", int(resp.Stratum)))
	return &SourceSample{
		Source:      host,
		Offset:      resp.ClockOffset,
		RTT:         resp.RTT,
		Uncertainty: resp.RTT / 2,
		Stratum:     int(resp.Stratum),
	}, nil
}

// HTTPDateOffset reads the Date header of an HTTPS endpoint (an AWS API,
// whose SigV4 check rejects requests more than 5 minutes off). The header
// has one-second resolution, so the estimate adds half a second and the
// uncertainty is RTT/2 + 0.5 s.
func HTTPDateOffset(ctx context.Context, endpoint string, timeout time.Duration, log *slog.Logger) (*SourceSample, error) {
	return HTTPDateOffsetTLS(ctx, endpoint, timeout, nil, log)
}

// HTTPDateOffsetTLS is HTTPDateOffset trusting what tlsCfg trusts (a
// --ca-bundle); nil is the default trust.
func HTTPDateOffsetTLS(ctx context.Context, endpoint string, timeout time.Duration, tlsCfg *tls.Config, log *slog.Logger) (*SourceSample, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	if !strings.Contains(endpoint, "://") {
		endpoint = "https://" + endpoint
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return nil, fmt.Errorf("endpoint %s: %w", endpoint, err)
	}
	// A fresh connection per probe: a reused keep-alive connection would
	// make the RTT look shorter than a real request's.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, Proxy: http.ProxyFromEnvironment, TLSClientConfig: tlsCfg}}
	log.LogAttrs(ctx, slog.LevelInfo, "http date request", slog.String("endpoint", endpoint))
	sent := time.Now()
	resp, err := client.Do(req)
	rtt := time.Since(sent)
	if err != nil {
		log.LogAttrs(ctx, slog.LevelWarn, "http date error", slog.String("endpoint", endpoint), slog.String("error", err.Error()))
		return nil, fmt.Errorf("endpoint %s: %w", endpoint, err)
	}
	resp.Body.Close()
	date := resp.Header.Get("Date")
	if date == "" {
		return nil, fmt.Errorf("endpoint %s: reply has no Date header", endpoint)
	}
	remote, err := http.ParseTime(date)
	if err != nil {
		return nil, fmt.Errorf("endpoint %s: unparsable Date header %q", endpoint, date)
	}
	mid := sent.Add(rtt / 2)
	offset := remote.Add(500 * time.Millisecond).Sub(mid)
	log.LogAttrs(ctx, slog.LevelInfo, "http date reply", slog.String("endpoint", endpoint),
		slog.Int("status", resp.StatusCode), slog.Float64("offset_seconds", offset.Seconds()))
	return &SourceSample{Source: endpoint, Offset: offset, RTT: rtt, Uncertainty: rtt/2 + 500*time.Millisecond}, nil
}
