# Build entry points that are not plain `cargo` commands.
#
# `make package` builds the Lambda deployment package (`bootstrap.zip`, custom runtime
# provided.al2023) for ARCH (arm64 by default, or x86_64) with cargo-lambda, which cross-compiles
# through zig, and copies it to target/lambda/dist/bootstrap.zip: the path the templates' Code names,
# which `aws cloudformation package` uploads. The stack's Architecture parameter must equal ARCH.
# `make package-all` builds both architectures (target/lambda/dist/<arch>/bootstrap.zip).
# The `.2.34` suffix pins the glibc the binary links against to AL2023's (2.34), so it loads there
# whatever glibc the build machine has.
#
# `make cfn-package CODE_BUCKET=<bucket>` then creates that S3 bucket if it is missing (private) and
# runs `aws cloudformation package` on TEMPLATE (cloudformation/organization.yaml by default), writing
# target/<template name>.packaged.yaml for `aws cloudformation deploy` (docs/deploy.md).
#
# Tools: `pip install cargo-lambda` (brings zig), `rustup target add aarch64-unknown-linux-gnu`.

CARGO_LAMBDA ?= cargo lambda
GLIBC ?= 2.34
DIST ?= target/lambda/dist
PACKAGE = --package gdfwd-lambda --bin bootstrap
ARCH ?= arm64
TEMPLATE ?= cloudformation/organization.yaml
PACKAGED = target/$(basename $(notdir $(TEMPLATE))).packaged.yaml

.PHONY: package package-all package-arm64 package-x86_64 package-sizes cfn-package lambda-bench

package: package-$(ARCH)
	cp $(DIST)/$(ARCH)/bootstrap.zip $(DIST)/bootstrap.zip
	@ls -l $(DIST)/bootstrap.zip

package-all: package-arm64 package-x86_64 package-sizes

cfn-package: package
	@test -n "$(CODE_BUCKET)" || { echo "make cfn-package: set CODE_BUCKET=<bucket name>"; exit 2; }
	aws s3api head-bucket --bucket $(CODE_BUCKET) 2>/dev/null || { aws s3 mb s3://$(CODE_BUCKET) && \
		aws s3api put-public-access-block --bucket $(CODE_BUCKET) --public-access-block-configuration \
		BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true; }
	aws cloudformation package --template-file $(TEMPLATE) --s3-bucket $(CODE_BUCKET) --s3-prefix gdfwd \
		--output-template-file $(PACKAGED)

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
