# krbops — everything a fresh machine needs goes through these targets.
#   make demo   throwaway realm + the runbooks as an on-call runs them
#               (KDC=mit|heimdal|ad picks the KDC implementation)
#   make test   vet + unit + integration (real MIT KDC) + end-to-end (testscript)

GO        ?= go
KDC       ?= mit
BIN       := bin/krbops
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
DATE      ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)
PLATFORMS := linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64
# Debian packages the lab (and so the integration tests and the demo) needs;
# samba-vfs-modules because AD provisioning fails without acl_xattr.so.
APT_PKGS  := krb5-kdc krb5-admin-server krb5-user faketime libfaketime bsdutils groff-base \
	samba samba-dsdb-modules samba-ad-provision samba-vfs-modules

.PHONY: all build test vet unit integration e2e demo deps cross bench clean docs

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/krbops

# deps installs the Debian packages when run as root, and otherwise prints
# the exact command: the lab needs real MIT and Samba binaries, never
# stand-ins.
deps:
	@missing=""; for b in /usr/sbin/krb5kdc /usr/sbin/kadmind /usr/sbin/kdb5_util /usr/bin/kinit /usr/bin/script \
		/usr/sbin/samba /usr/bin/samba-tool /usr/bin/groff; do \
		[ -x $$b ] || missing="$$missing $$b"; done; \
	ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || missing="$$missing libfaketime"; \
	[ -e /usr/share/samba/setup/provision.ldif ] || missing="$$missing samba-ad-provision"; \
	ls /usr/lib/*/samba/ldb/samba_dsdb.so >/dev/null 2>&1 || missing="$$missing samba-dsdb-modules"; \
	ls /usr/lib/*/samba/vfs/acl_xattr.so >/dev/null 2>&1 || missing="$$missing samba-vfs-modules"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing:$$missing"; \
			[ -e /usr/sbin/policy-rc.d ] || printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PKGS) >/dev/null; \
		else \
			echo "missing:$$missing"; \
			echo "run: sudo apt-get install -y $(APT_PKGS)"; exit 2; \
		fi; \
	fi

# vet fails when go.mod/go.sum are not tidy (go mod tidy -diff prints what
# `go mod tidy` would change and exits 1) or a file needs gofmt.
vet:
	$(GO) mod tidy -diff
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }

# Unit tests need no server. Integration and end-to-end tests start the
# lab realm; with CI=true a missing KDC binary fails them instead of
# skipping.
unit:
	$(GO) test -race -count=1 ./runbook/... ./kdcops/... ./output/... ./commands/... ./secretstore/... ./ledger/... ./rotate/... ./dynamo/...

integration:
	$(GO) test -count=1 ./internal/... ./test/integration/...

e2e:
	$(GO) test -count=1 ./cmd/krbops/...

test: deps vet unit integration e2e man-check

demo: deps build
	$(GO) run ./internal/lab/cmd/krbops-lab demo --kind $(KDC) --krbops $(BIN)

cross:
	@for p in $(PLATFORMS); do \
		os=$${p%/*}; arch=$${p#*/}; ext=; [ $$os = windows ] && ext=.exe; \
		echo "build $$os/$$arch"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist/krbops_$${os}_$${arch}$$ext ./cmd/krbops || exit 1; \
	done

# bench prints figures against peers measured in the same run; lintbench
# (100,000 keytabs) is separate because it builds a large tree.
bench: build
	$(GO) run ./bench/clockbench --krbops $(BIN)
	$(GO) run ./bench/verifybench --krbops $(BIN)

clean:
	rm -rf bin dist build

# fuzz runs each parser fuzz target for FUZZTIME; it is not part of `make
# test`. A crasher is written to kdcops/testdata/fuzz/<target>/ and from
# then on replays in every `go test ./kdcops`.
FUZZTIME ?= 60s
.PHONY: fuzz lintbench
fuzz:
	$(GO) test ./kdcops -run '^$$' -fuzz '^FuzzParseKeytab$$' -fuzztime $(FUZZTIME)
	$(GO) test ./kdcops -run '^$$' -fuzz '^FuzzParseCCache$$' -fuzztime $(FUZZTIME)

# lintbench builds a tree of 100,000 keytabs and times `krbops klist-lint
# --dir` on it next to a `klist -k -t -e` loop over a sample.
lintbench: build
	$(GO) run ./bench/lintbench --krbops $(BIN)

# deps-dynalite installs dynalite (npm), the DynamoDB server of the
# resume-query tests, into .cache/npm where internal/dynalab finds it; it
# runs as part of `make deps`. node and npm come from Debian.
DYNALITE_VERSION := 4.0.0
.PHONY: deps-dynalite soak querybench
deps: deps-dynalite
deps-dynalite:
	@if [ -x .cache/npm/node_modules/.bin/dynalite ] && grep -q '"version": "$(DYNALITE_VERSION)"' .cache/npm/node_modules/dynalite/package.json 2>/dev/null; then \
		exit 0; fi; \
	if ! command -v npm >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing: nodejs npm"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; \
		else \
			echo "missing: npm"; echo "run: sudo apt-get install -y nodejs npm"; exit 2; \
		fi; \
	fi; \
	echo "installing: dynalite@$(DYNALITE_VERSION) into .cache/npm"; \
	npm install --prefix .cache/npm --no-audit --no-fund --loglevel=error dynalite@$(DYNALITE_VERSION) >/dev/null

# deps-heimdal unpacks Heimdal's KDC, kpasswdd, kstash and kadmin from
# Debian's packages into .cache/heimdal, where internal/lab finds them
# (KRBOPS_HEIMDAL_DIR overrides): they conflict with MIT's packages, so
# they are never installed, and run with LD_LIBRARY_PATH pointing into the
# unpacked tree. It skips when the binaries are there and .versions matches
# the versions apt would download; it runs as part of `make deps`.
HEIMDAL_DIR  ?= .cache/heimdal
HEIMDAL_PKGS := heimdal-kdc heimdal-clients libasn1-8-heimdal libgssapi3-heimdal \
	libhcrypto5-heimdal libhdb9-heimdal libheimbase1-heimdal libheimntlm0-heimdal \
	libkadm5srv8-heimdal libkadm5clnt7-heimdal libkdc2-heimdal libkrb5-26-heimdal \
	libroken19-heimdal libsl0-heimdal libhx509-5-heimdal libkafs0-heimdal \
	libotp0-heimdal libwind0-heimdal
HEIMDAL_BINS := usr/lib/heimdal-servers/kdc usr/lib/heimdal-servers/kpasswdd usr/sbin/kstash usr/bin/kadmin.heimdal
.PHONY: deps-heimdal
deps: deps-heimdal
deps-heimdal:
	@want="$$(apt-cache show --no-all-versions $(HEIMDAL_PKGS) 2>/dev/null | awk '/^Package:/{p=$$2} /^Version:/{print p"="$$2}' | sort)"; \
	have=1; for b in $(HEIMDAL_BINS); do [ -x "$(HEIMDAL_DIR)/$$b" ] || have=; done; \
	if [ -n "$$have" ] && [ -f "$(HEIMDAL_DIR)/.versions" ] && { [ -z "$$want" ] || [ "$$want" = "$$(cat $(HEIMDAL_DIR)/.versions)" ]; }; then \
		exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "missing: Heimdal binaries in $(HEIMDAL_DIR)"; echo "run: sudo make deps-heimdal"; exit 2; fi; \
	echo "installing: Heimdal 7.8 ($(words $(HEIMDAL_PKGS)) packages) into $(HEIMDAL_DIR)"; \
	mkdir -p "$$(dirname $(HEIMDAL_DIR))" && tmp="$$(mktemp -d "$(HEIMDAL_DIR).XXXXXX")" && trap 'rm -rf "$$tmp"' EXIT && mkdir "$$tmp/debs" "$$tmp/root" || exit 1; \
	get() { (cd "$$tmp/debs" && apt-get download -q=2 -o APT::Sandbox::User=root $(HEIMDAL_PKGS)); }; \
	get || { apt-get update -qq && get; } || exit 1; \
	for f in "$$tmp"/debs/*.deb; do dpkg -x "$$f" "$$tmp/root" || exit 1; done; \
	for f in "$$tmp"/debs/*.deb; do echo "$$(dpkg-deb -f "$$f" Package)=$$(dpkg-deb -f "$$f" Version)"; done | sort > "$$tmp/root/.versions"; \
	rm -rf "$(HEIMDAL_DIR)" && mv "$$tmp/root" "$(HEIMDAL_DIR)"

# soak kills resume-query with SIGKILL 100 times per crash test (20 in
# `make test`) and checks every resumed output against a plain scan.
soak: deps-dynalite
	KRBOPS_SOAK_KILLS=100 $(GO) test -count=1 -timeout 30m -run 'TestResumeQueryKilled' -v ./test/integration/

# querybench: krbops scan against a raw aws-sdk-go-v2 paginator loop over
# 100,000 items in dynalite (items/s and client CPU per 1,000 items as
# krbops/raw ratios), and the pages a resume re-reads after a kill.
querybench: build deps-dynalite
	$(GO) run ./bench/querybench --krbops $(BIN)

# exec-soak: krbops exec with 60 s tickets around a job that calls MIT
# kvno every 10 s for 5 minutes (make test runs a shorter version that
# waits on the log's re-login events).
.PHONY: exec-soak
exec-soak:
	KRBOPS_EXEC_SOAK=1 CI=true $(GO) test -count=1 -timeout 15m -run 'TestExecKeepsTheTicketFresh' -v ./test/integration/

# rotatebench: krbops rotate (kpasswd backend, limits off) against MIT
# k5srvutil change on N lab principals each, in the same run.
# ledgerbench: 8 processes × 200 admissions into one window of 50 on the
# DynamoDB ledger (dynalite) and the bbolt ledger; prints the admitted
# count (exactly 50) and p50/p99 admission latency of each.
.PHONY: ledgerbench
ledgerbench: deps-dynalite
	$(GO) run ./bench/ledgerbench

.PHONY: rotatebench
rotatebench: build
	$(GO) run ./bench/rotatebench --krbops $(BIN)

# batchbench: one krbops rotate --targets batch of 1,000 lab principals
# (limits off, --concurrency 16) against a k5srvutil change loop over
# 1,000 others, in the same run; prints rotations/s of both and the ratio.
.PHONY: batchbench
batchbench: build
	$(GO) run ./bench/batchbench --krbops $(BIN)

# man-check generates the man pages and completions the packages ship
# (internal/gendocs) and checks them: a page per command naming every flag,
# groff renders each without a warning, the bash completion loads; and the
# packages' contents (goreleaser.yaml nfpms) and systemd units
# (packaging/systemd, verified with systemd-analyze where installed).
# docs-gen writes them into build/docs for a look.
.PHONY: man-check docs-gen dist
man-check:
	$(GO) test -count=1 -timeout 5m ./internal/gendocs/ ./packaging/

docs-gen:
	$(GO) run ./internal/gendocs -out build/docs

# dist builds the release archives and the .deb and .rpm packages into
# dist/ with goreleaser (snapshot: no tag, nothing published).
dist:
	@if ! command -v goreleaser >/dev/null 2>&1; then \
		echo "make dist needs goreleaser v2, which is not installed."; \
		echo "install it: go install github.com/goreleaser/goreleaser/v2@v2.13.0"; \
		echo "or build the binaries alone: make cross; man pages and completions: make docs-gen"; \
		exit 2; \
	fi
	goreleaser release --snapshot --clean --config goreleaser.yaml

# auditbench: krbops audit against grep -c over the same generated MIT
# krb5kdc log of 1M and 10M lines (100,000 principals), in the same run;
# prints bytes/s of both, their ratio and krbops' peak RSS. The logs
# (about 4 GiB) live in a temp dir, removed after.
.PHONY: auditbench
auditbench: build
	$(GO) run ./bench/auditbench --krbops $(BIN)
