# idstream — build, test, demo, bench.
#
#   make            release-ish build of ./idstream (-O2, warnings are errors)
#   make asan       the same under ASan+UBSan into build-asan/
#   make test       bootstrap + sanitizer build + the whole suite
#   make demo       bootstrap + build + the end-to-end demo on local services
#   make bench      bootstrap + build + benchmarks (prints figures, asserts none)
#   make format     clang-format every C file; make format-check verifies
#   make docs       regenerate CONFIGURATION.md from the config table

CC      ?= cc
PKGS    := rdkafka rocksdb avro-c jansson ldap libcurl lua5.4 libmicrohttpd openssl
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CSTD    := -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lcsv -lpthread -lm

BUILD   ?= build
ifeq ($(BUILD),build-asan)
OPT     := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
else
OPT     := -O2 -g
endif

CFLAGS  := $(CSTD) $(WARN) $(OPT) -I. -I$(BUILD)/gen $(PKG_CFLAGS) $(EXTRA_CFLAGS)
LDFLAGS := $(OPT)

LIB_DIRS := common schemas state ingest processors sinks
LIB_SRC  := $(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c))
CMD_SRC  := $(wildcard cmd/*.c)
GEN_SRC  := $(BUILD)/gen/avsc_embed.c
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o) $(BUILD)/gen/avsc_embed.o
CMD_OBJ  := $(CMD_SRC:%.c=$(BUILD)/%.o)
LIB      := $(BUILD)/libidstream.a

UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
# Helpers shared by several unit tests (linked into each of them).
UNIT_SUP := $(patsubst %.c,$(BUILD)/%.o,$(wildcard tests/unit/support/*.c))
.SECONDARY: $(UNIT_SUP)
TOOL_SRC := $(wildcard tests/tools/*.c)
TOOL_BIN := $(TOOL_SRC:tests/tools/%.c=$(BUILD)/tools/%)

.PHONY: all asan test unit demo bench format format-check docs clean bootstrap

all: idstream

idstream: $(BUILD)/idstream
	@if [ "$(BUILD)" = build ]; then ln -sf $(BUILD)/idstream idstream; fi

$(BUILD)/idstream: $(CMD_OBJ) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $(CMD_OBJ) $(LIB) $(PKG_LIBS)

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

# Schemas are compiled in, so the binary needs no files at run time.
$(BUILD)/gen/avsc_embed.c: $(wildcard schemas/*.avsc) scripts/embed-avsc.sh
	@mkdir -p $(dir $@)
	sh scripts/embed-avsc.sh schemas/*.avsc > $@

$(BUILD)/gen/avsc_embed.o: $(BUILD)/gen/avsc_embed.c
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/tests/%: tests/unit/%.c $(UNIT_SUP) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(UNIT_SUP) $(LIB) $(PKG_LIBS) -lcmocka

$(BUILD)/tools/%: tests/tools/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LIB) $(PKG_LIBS)

unit: $(UNIT_BIN) $(TOOL_BIN) $(BUILD)/idstream

asan:
	$(MAKE) BUILD=build-asan build-asan/idstream unit

bootstrap:
	sh scripts/bootstrap.sh

test: bootstrap
	$(MAKE) BUILD=build-asan unit
	IDSTREAM_BUILD=build-asan sh tests/run.sh

demo: bootstrap
	$(MAKE) all tools
	sh scripts/demo.sh

bench: bootstrap
	$(MAKE) all tools
	sh scripts/bench.sh

.PHONY: tools
tools: $(TOOL_BIN)

FMT_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
format:
	clang-format -i $(FMT_FILES)
format-check:
	clang-format --dry-run --Werror $(FMT_FILES)

docs: idstream
	./idstream config docs > CONFIGURATION.md

clean:
	rm -rf build build-asan idstream

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)

# ---- fuzz: libFuzzer targets (clang) for every webhook parser and the CSV
# reader.  `make fuzz` builds them into build-fuzz/ and runs each for
# FUZZ_SECONDS; `make fuzz-NAME` (e.g. fuzz-fuzz_csv) runs one.  Seeds are in
# tests/fuzz/corpus/NAME, new inputs go to build-fuzz/corpus/NAME, crashes to
# build-fuzz/crash-*.  Not part of `make test`.
FUZZ_SECONDS ?= 30
FUZZ_DIR     := build-fuzz
FUZZ_SRC     := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_NAMES   := $(FUZZ_SRC:tests/fuzz/%.c=%)
FUZZ_BIN     := $(FUZZ_NAMES:%=$(FUZZ_DIR)/%)
FUZZ_DEPS    := ingest/webhook.c ingest/csv_reader.c common/attrs.c common/buf.c \
                common/err.c schemas/model.c
FUZZ_CFLAGS  := $(CSTD) $(WARN) -O1 -g -fno-omit-frame-pointer \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -I. \
                $(shell pkg-config --cflags jansson openssl 2>/dev/null)
FUZZ_LIBS    := $(shell pkg-config --libs jansson openssl 2>/dev/null) -lcsv

.PHONY: fuzz fuzz-build fuzz-clang $(FUZZ_NAMES:%=fuzz-%)

# clang and its libFuzzer runtime come from Debian when missing.
fuzz-clang:
	@command -v clang >/dev/null 2>&1 && \
	  echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n){(void)d;(void)n;return 0;}' | \
	  clang -fsanitize=fuzzer -x c - -o /dev/null >/dev/null 2>&1 || \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	      --no-install-recommends clang libclang-rt-14-dev; }

$(FUZZ_DIR)/%: tests/fuzz/%.c tests/fuzz/fuzz_webhook.h $(FUZZ_DEPS) | fuzz-clang
	@mkdir -p $(FUZZ_DIR)
	clang $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_DEPS) $(FUZZ_LIBS)

fuzz-build: $(FUZZ_BIN)

$(FUZZ_NAMES:%=fuzz-%): fuzz-%: $(FUZZ_DIR)/%
	@mkdir -p $(FUZZ_DIR)/corpus/$*
	cd $(FUZZ_DIR) && ./$* -max_total_time=$(FUZZ_SECONDS) -max_len=65536 \
	  -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	  corpus/$* ../tests/fuzz/corpus/$*

fuzz: fuzz-build
	@for n in $(FUZZ_NAMES); do \
	  $(MAKE) --no-print-directory fuzz-$$n || exit 1; done
