# Build entry points that are not plain `cargo` commands.
#
# `make package` builds the Lambda deployment package (`bootstrap.zip`, custom runtime
# provided.al2023) for both architectures with cargo-lambda, which cross-compiles through zig.
# The `.2.34` suffix pins the glibc the binary links against to AL2023's (2.34), so it loads there
# whatever glibc the build machine has.
#
# Tools: `pip install cargo-lambda` (brings zig), `rustup target add aarch64-unknown-linux-gnu`.
# Output: target/lambda/dist/<arch>/bootstrap.zip (upload it as the stack's CodeS3Key; the stack's
# Architecture parameter must match).

CARGO_LAMBDA ?= cargo lambda
GLIBC ?= 2.34
DIST ?= target/lambda/dist
PACKAGE = --package gdfwd-lambda --bin bootstrap

.PHONY: package package-arm64 package-x86_64 package-sizes lambda-bench

package: package-arm64 package-x86_64 package-sizes

package-arm64:
	$(CARGO_LAMBDA) build --release $(PACKAGE) --target aarch64-unknown-linux-gnu.$(GLIBC) \
		--output-format zip --lambda-dir $(DIST)/arm64 --flatten bootstrap

package-x86_64:
	$(CARGO_LAMBDA) build --release $(PACKAGE) --target x86_64-unknown-linux-gnu.$(GLIBC) \
		--output-format zip --lambda-dir $(DIST)/x86_64 --flatten bootstrap

package-sizes:
	@for a in arm64 x86_64; do ls -l $(DIST)/$$a/bootstrap.zip 2>/dev/null || true; done
	@ls -l target/aarch64-unknown-linux-gnu/release/bootstrap target/x86_64-unknown-linux-gnu/release/bootstrap 2>/dev/null || true

# The Lambda benchmark (bench/lambda/README.md): release build, then 10,000 findings per batch size.
lambda-bench:
	bench/lambda/run.sh
