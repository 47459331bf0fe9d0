# warpgate top-level Makefile.
#
# Every output lands under $(O) (default build/).  `make V=1` shows the commands.
# Sources are found by directory, so adding a file never needs an edit here:
#   user/<concern>/*.c      -> libwarpgate.{a,so}   (user/cli/ -> bin/warpgate)
#   tools/<prog>/main.c     -> bin/<prog>           (all .c files of that folder)
#   bpf/*.bpf.c             -> bpf/*.bpf.o + bpf/*.skel.h
#   selftests/unit/test_*.c -> tests/unit/test_*    (cmocka, no root)
#   selftests/bpf/test_*.c  -> tests/bpf/test_*     (root: BPF_PROG_RUN)
#   selftests/netns/*.c     -> tests/netns/*        (helpers for the netns tier)
#   selftests/natlab/*.c    -> natlab/*             (NAT lab tools)
#   selftests/bench/*.c     -> bench/*
#   selftests/fuzz/fuzz_*.c -> fuzz/fuzz_* (libFuzzer) and tests/fuzz/fuzz_* (corpus replay)
#   examples/*.c            -> examples/*

.DELETE_ON_ERROR:
.SECONDARY:
.SUFFIXES:
.DEFAULT_GOAL := all

O ?= build
override O := $(patsubst %/,%,$(O))
V ?= 0
SAN ?= 0
PREFIX ?= /usr/local
DESTDIR ?=
VERSION := 0.1.0

ifeq ($(V),1)
Q :=
msg :=
else
Q := @
msg = @printf '  %-8s %s\n' "$(1)" "$(2)";
endif

CC := gcc
CLANG ?= clang
BPFTOOL ?= bpftool
PKG_CONFIG ?= pkg-config
ARCH := $(shell uname -m)
BPF_ARCH := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')

PKGS := libbpf libmnl libsodium libcrypto jansson sqlite3 libmosquitto miniupnpc
PKG_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null) -lnatpmp -lpthread -lm

WARNFLAGS := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter \
	-Wformat=2 -Wvla -Wno-format-nonliteral
CFLAGS ?= -O2 -g
BASE_CFLAGS := -std=gnu11 -fPIC -D_GNU_SOURCE -DWARP_VERSION='"$(VERSION)"' $(WARNFLAGS) \
	-Iinclude -Iuser -I$(O)/bpf $(PKG_CFLAGS)
ifeq ($(SAN),1)
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
endif
ALL_CFLAGS = $(BASE_CFLAGS) $(CFLAGS) $(SANFLAGS) -MMD -MP
ALL_LDFLAGS = $(LDFLAGS) $(SANFLAGS)

# ---------------------------------------------------------------- sources
LIB_SRCS := $(sort $(filter-out user/cli/%,$(wildcard user/*/*.c)))
CLI_SRCS := $(sort $(wildcard user/cli/*.c))
TOOL_DIRS := $(sort $(patsubst %/main.c,%,$(wildcard tools/*/main.c)))
TOOLS := $(notdir $(TOOL_DIRS))
BPF_SRCS := $(sort $(wildcard bpf/*.bpf.c))
UNIT_SRCS := $(sort $(wildcard selftests/unit/test_*.c))
BPFT_SRCS := $(sort $(wildcard selftests/bpf/test_*.c))
TESTLIB_SRCS := $(sort $(wildcard selftests/lib/*.c))
NETNS_SRCS := $(sort $(wildcard selftests/netns/*.c))
NATLAB_SRCS := $(sort $(wildcard selftests/natlab/*.c))
BENCH_SRCS := $(sort $(wildcard selftests/bench/*.c))
FUZZ_SRCS := $(sort $(wildcard selftests/fuzz/fuzz_*.c))
EXAMPLE_SRCS := $(sort $(wildcard examples/*.c))

obj = $(patsubst %.c,$(O)/obj/%.o,$(1))

LIB_OBJS := $(call obj,$(LIB_SRCS))
CLI_OBJS := $(call obj,$(CLI_SRCS))
TESTLIB_OBJS := $(call obj,$(TESTLIB_SRCS))
BPF_OBJS := $(patsubst bpf/%.bpf.c,$(O)/bpf/%.bpf.o,$(BPF_SRCS))
BPF_SKELS := $(patsubst bpf/%.bpf.c,$(O)/bpf/%.skel.h,$(BPF_SRCS))
UNIT_BINS := $(patsubst selftests/unit/%.c,$(O)/tests/unit/%,$(UNIT_SRCS))
BPFT_BINS := $(patsubst selftests/bpf/%.c,$(O)/tests/bpf/%,$(BPFT_SRCS))
NETNS_BINS := $(patsubst selftests/netns/%.c,$(O)/tests/netns/%,$(NETNS_SRCS))
NATLAB_BINS := $(patsubst selftests/natlab/%.c,$(O)/natlab/%,$(NATLAB_SRCS))
BENCH_BINS := $(patsubst selftests/bench/%.c,$(O)/bench/%,$(BENCH_SRCS))
FUZZ_REPLAY_BINS := $(patsubst selftests/fuzz/%.c,$(O)/tests/fuzz/%,$(FUZZ_SRCS))
FUZZ_BINS := $(patsubst selftests/fuzz/%.c,$(O)/fuzz/%,$(FUZZ_SRCS))
EXAMPLE_BINS := $(patsubst examples/%.c,$(O)/examples/%,$(EXAMPLE_SRCS))
TOOL_BINS := $(addprefix $(O)/bin/,$(TOOLS))

LIBA := $(O)/lib/libwarpgate.a
LIBSO := $(O)/lib/libwarpgate.so
CLI := $(O)/bin/warpgate

# ---------------------------------------------------------------- top-level targets
.PHONY: all lib bpf bins examples tests natlab bench-bins clean deps check check-unit check-bpf \
	check-netns check-all bench fuzz fuzz-bins install format lint demo vmtest help

all: lib bins examples natlab

lib: $(LIBA) $(LIBSO)
bpf: $(BPF_OBJS) $(BPF_SKELS)
bins: $(CLI) $(TOOL_BINS)
examples: $(EXAMPLE_BINS)
natlab: $(NATLAB_BINS)
bench-bins: $(BENCH_BINS)
tests: $(UNIT_BINS) $(BPFT_BINS) $(NETNS_BINS) $(FUZZ_REPLAY_BINS) all

help:
	@echo "make [O=dir] [V=1]     build library, CLI, tools, BPF objects, examples"
	@echo "make deps              install the Debian packages needed to build, test and demo"
	@echo "make check             sanitizer build + every test tier the machine supports"
	@echo "make check-unit|check-bpf|check-netns   one tier"
	@echo "make bench             benchmark tables"
	@echo "make fuzz [FUZZ_TIME=s] run every libFuzzer target for FUZZ_TIME seconds"
	@echo "make demo              two peers behind emulated NATs find each other (root)"
	@echo "make vmtest [KERNEL=bzImage]  BPF + netns tiers under a second kernel in qemu"
	@echo "make install PREFIX=.. | format | lint | clean"

# ---------------------------------------------------------------- compile rules
$(O)/obj/%.o: %.c | $(BPF_SKELS)
	$(call msg,CC,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(ALL_CFLAGS) -c $< -o $@

$(LIBA): $(LIB_OBJS)
	$(call msg,AR,$@)
	@mkdir -p $(@D)
	$(Q)rm -f $@ && ar rcs $@ $^

$(LIBSO): $(LIB_OBJS)
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) -shared -Wl,-soname,libwarpgate.so.0 $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(CLI): $(CLI_OBJS) $(LIBA)
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $(CLI_OBJS) $(LIBA) $(PKG_LIBS)

define tool_rule
$(O)/bin/$(1): $(call obj,$(wildcard tools/$(1)/*.c)) $(LIBA)
	$$(call msg,LD,$$@)
	@mkdir -p $$(@D)
	$$(Q)$$(CC) $$(ALL_LDFLAGS) -o $$@ $(call obj,$(wildcard tools/$(1)/*.c)) $(LIBA) $$(PKG_LIBS)
endef
$(foreach t,$(TOOLS),$(eval $(call tool_rule,$(t))))

$(O)/tests/lib/libtesthelp.a: $(TESTLIB_OBJS)
	$(call msg,AR,$@)
	@mkdir -p $(@D)
	$(Q)rm -f $@ && ar rcs $@ $^ && ranlib $@

TESTLIB := $(O)/tests/lib/libtesthelp.a
TEST_LIBS = $(TESTLIB) $(LIBA) $(PKG_LIBS) -lcmocka

$(O)/tests/unit/%: $(O)/obj/selftests/unit/%.o $(TESTLIB) $(LIBA)
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $< $(TEST_LIBS)

$(O)/tests/bpf/%: $(O)/obj/selftests/bpf/%.o $(TESTLIB) $(LIBA)
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $< $(TEST_LIBS)

$(O)/tests/netns/%: $(O)/obj/selftests/netns/%.o $(TESTLIB) $(LIBA)
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $< $(TEST_LIBS)

$(O)/natlab/%: $(O)/obj/selftests/natlab/%.o
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $< $(shell $(PKG_CONFIG) --libs libnetfilter_queue libmnl 2>/dev/null) -lm

$(O)/bench/%: $(O)/obj/selftests/bench/%.o $(LIBA)
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $< $(LIBA) $(PKG_LIBS)

$(O)/examples/%: $(O)/obj/examples/%.o $(LIBA)
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $< $(LIBA) $(PKG_LIBS)

# Fuzz targets: replay binaries (gcc, corpus + bounded random mutation, run by check-unit)
# and real libFuzzer binaries (clang, `make fuzz`).
$(O)/tests/fuzz/%: $(O)/obj/selftests/fuzz/%.o $(O)/obj/selftests/fuzz/replay/replay_main.o $(LIBA)
	$(call msg,LD,$@)
	@mkdir -p $(@D)
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(PKG_LIBS)

FUZZ_CFLAGS := $(BASE_CFLAGS) -O1 -g -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer
FUZZ_LIB_OBJS := $(patsubst %.c,$(O)/fuzz/obj/%.o,$(LIB_SRCS))
$(O)/fuzz/obj/%.o: %.c | $(BPF_SKELS)
	$(call msg,CLANG,$@)
	@mkdir -p $(@D)
	$(Q)$(CLANG) $(subst -fsanitize=fuzzer,-fsanitize=fuzzer-no-link,$(FUZZ_CFLAGS)) -c $< -o $@
$(O)/fuzz/%: selftests/fuzz/%.c $(FUZZ_LIB_OBJS)
	$(call msg,FUZZ,$@)
	@mkdir -p $(@D)
	$(Q)$(CLANG) $(FUZZ_CFLAGS) -o $@ $^ $(PKG_LIBS)

# ---------------------------------------------------------------- BPF
BPF_CFLAGS := -g -O2 -target bpf -D__TARGET_ARCH_$(BPF_ARCH) -Wall -Werror -Iinclude -Ibpf \
	-idirafter /usr/include/$(ARCH)-linux-gnu -idirafter /usr/include

$(O)/bpf/%.bpf.o: bpf/%.bpf.c $(wildcard bpf/*.h) $(wildcard include/warpgate/*.h)
	$(call msg,BPF,$@)
	@mkdir -p $(@D)
	$(Q)$(CLANG) $(BPF_CFLAGS) -c $< -o $@.raw.o
	$(Q)$(BPFTOOL) gen object $@ $@.raw.o
	$(Q)rm -f $@.raw.o

$(O)/bpf/%.skel.h: $(O)/bpf/%.bpf.o
	$(call msg,SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< name $(subst -,_,$*)_bpf > $@

# ---------------------------------------------------------------- tests
# `make check` always runs on a sanitizer build in $(O)/san.
ifeq ($(SAN),1)
check: tests bench-bins
	$(Q)selftests/run.sh --build $(O) unit bpf netns
check-unit: tests
	$(Q)selftests/run.sh --build $(O) unit
check-bpf: tests
	$(Q)selftests/run.sh --build $(O) bpf
check-netns: tests
	$(Q)selftests/run.sh --build $(O) netns
else
check check-unit check-bpf check-netns:
	$(Q)$(MAKE) --no-print-directory SAN=1 O=$(O)/san $@
endif

bench: all bench-bins
	$(Q)selftests/bench/run.sh --build $(O)

fuzz-bins: $(FUZZ_BINS)
FUZZ_TIME ?= 30
fuzz: fuzz-bins
	$(Q)selftests/fuzz/run.sh --build $(O) --time $(FUZZ_TIME)

vmtest:
	$(Q)vmtest/run.sh --build $(O) $(if $(KERNEL),--kernel $(KERNEL))

demo: deps
	$(Q)$(MAKE) --no-print-directory all
	$(Q)tools/demo.sh --build $(O)

deps:
	$(Q)tools/install-deps.sh

# ---------------------------------------------------------------- install, style
MAN_PAGES := $(wildcard docs/man/*.[0-9])
install: all
	$(call msg,INSTALL,$(DESTDIR)$(PREFIX))
	$(Q)install -d $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include/warpgate \
		$(DESTDIR)$(PREFIX)/bin
	$(Q)install -m 0644 $(LIBA) $(DESTDIR)$(PREFIX)/lib/
	$(Q)install -m 0755 $(LIBSO) $(DESTDIR)$(PREFIX)/lib/libwarpgate.so.$(VERSION)
	$(Q)ln -sf libwarpgate.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libwarpgate.so.0
	$(Q)ln -sf libwarpgate.so.0 $(DESTDIR)$(PREFIX)/lib/libwarpgate.so
	$(Q)install -m 0644 include/warpgate/*.h $(DESTDIR)$(PREFIX)/include/warpgate/
	$(Q)install -m 0755 $(CLI) $(TOOL_BINS) $(DESTDIR)$(PREFIX)/bin/
	$(Q)sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' \
		-e 's|@REQUIRES@|$(PKGS)|' tools/warpgate.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/warpgate.pc
	$(Q)for m in $(MAN_PAGES); do s=$${m##*.}; install -d $(DESTDIR)$(PREFIX)/share/man/man$$s; \
		install -m 0644 $$m $(DESTDIR)$(PREFIX)/share/man/man$$s/; done
	$(Q)install -d $(DESTDIR)$(PREFIX)/lib/systemd/system
	$(Q)sed 's|/usr/local|$(PREFIX)|g' tools/warpgate.service > $(DESTDIR)$(PREFIX)/lib/systemd/system/warpgate.service
	$(Q)sed 's|/usr/local|$(PREFIX)|g' tools/namebumpd.service > $(DESTDIR)$(PREFIX)/lib/systemd/system/namebumpd.service

STYLE_SRCS = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
format:
	$(Q)clang-format -i $(STYLE_SRCS)

lint:
	$(Q)clang-format --dry-run --Werror $(STYLE_SRCS)
	$(Q)cppcheck --quiet --error-exitcode=1 --enable=warning,portability --inline-suppr \
		--suppress=missingIncludeSystem -D__linux__ -Iinclude -Iuser \
		$(filter-out bpf/%,$(filter %.c,$(STYLE_SRCS)))

clean:
	$(Q)rm -rf $(O)

-include $(shell find $(O)/obj -name '*.d' 2>/dev/null)
