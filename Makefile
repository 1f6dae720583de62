# nlpd build. `make` builds build/nlpd; `make SANITIZE=1` builds build/san/nlpd with ASan+UBSan.
# `make test` and `make demo` first install missing Debian packages and fetch the models.

CC       ?= cc
PREFIX     ?= /usr/local
SYSCONFDIR ?= /etc
UNITDIR    ?= $(PREFIX)/lib/systemd/system
PKGS     := libconfig jansson libutf8proc libcrypto openblas rdkafka libevent avro-c hiredis libsystemd libcurl
SANITIZE ?= 0
ifeq ($(SANITIZE),1)
BUILD    := build/san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT      := -O1 -g
else
BUILD    := build
SANFLAGS :=
OPT      := -O2 -g
endif

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

# Include paths per layer (README "Layout": daemon -> stages -> models -> kernels -> common): a file sees the
# headers of its own folder (quoted includes), of its layer and of the layers below, so an include the wrong way
# does not compile (tests/check_includes.sh proves it). A stage sees one daemon header, nlpd_stage.h, through
# STAGE_API, a folder holding only a link to it. Tests, tools, benches and fuzzers see everything (INCLUDES).
STAGE_API   := $(BUILD)/inc/stage
INC_common  := -Icommon
INC_kernels := -Icommon -Ikernels
INC_models  := -Icommon -Ikernels
INC_stages  := -Icommon -Ikernels -Istages/models -I$(STAGE_API)
INC_daemon  := -Icommon -Ikernels -Istages/models -Idaemon
INCLUDES := -Icommon -Idaemon -Istages -Istages/models -Ikernels -Ikernels/cpu
CFLAGS   ?= $(OPT)
CFLAGS   += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wstrict-prototypes -Wformat=2 -Wvla \
            -fno-strict-aliasing -pthread -MMD -MP $(SANFLAGS) $(PKG_CFLAGS)
LDFLAGS  += -pthread $(SANFLAGS)
# oneDNN (Debian libdnnl-dev: no pkg-config file) runs on OpenMP; the element-wise kernels share its threads.
CFLAGS   += -fopenmp
LDFLAGS  += -fopenmp
LDLIBS   += $(PKG_LIBS) -ldnnl -lm

LIB_SRC  := $(wildcard common/*.c kernels/*.c kernels/cpu/*.c stages/models/*.c stages/*/*.c) \
            $(filter-out daemon/main.c,$(wildcard daemon/*.c))
LIB_SRC  := $(sort $(LIB_SRC))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
MAIN_OBJ := $(BUILD)/obj/daemon/main.o
LIB      := $(BUILD)/libnlpd.a

UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/tests/%)
TOOL_SRC := $(wildcard tests/models/tool_*.c tests/integration/tool_*.c tests/soak/tool_*.c)
TOOL_BIN := $(patsubst %.c,$(BUILD)/tests/%,$(notdir $(TOOL_SRC)))

# The CUDA backend, libnlpd_cuda.so (kernels/cuda/), loaded at run time with dlopen: built whenever nvcc is found
# (CUDA=0 skips it), only in the normal build (the sanitised binaries use the CPU backend). nlpd links no CUDA
# library; the .so links cudart and cuBLAS and finds them through its rpath or the system's library path.
NVCC     ?= $(firstword $(wildcard /usr/local/cuda/bin/nvcc) $(shell command -v nvcc 2> /dev/null))
ifeq ($(NVCC),)
CUDA     ?= 0
else
CUDA     ?= 1
endif
CUDA_HOME   := $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_LIBDIR := $(firstword $(wildcard $(CUDA_HOME)/lib64 $(CUDA_HOME)/lib))
CUDA_ARCH   ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
               -gencode arch=compute_90,code=compute_90
NVCCFLAGS   ?= -O2 -g
NVCCFLAGS   += -std=c++17 $(CUDA_ARCH) -Xcompiler -fPIC,-fvisibility=hidden,-Wall,-Wextra -Icommon -Ikernels -Ikernels/cuda \
               -MMD -MP
CUDA_SRC := $(wildcard kernels/cuda/*.cu)
CUDA_OBJ := $(CUDA_SRC:%.cu=build/cuda/%.o) build/cuda/common/nlpd_error.o
CUDA_LIB := build/libnlpd_cuda.so
ifeq ($(CUDA)$(SANITIZE),10)
CUDA_ALL := $(CUDA_LIB)
else
CUDA_ALL :=
endif

# The same CUDA sources built by g++ against the host emulator (kernels/cuda/emul/, README "CUDA emulator"):
# build/emul/libnlpd_cuda.so runs the CUDA backend on the CPU, so tests check its kernels and bookkeeping on
# machines without a GPU (NLPD_LIBDIR=build/emul). Needs no CUDA toolkit; normal build only.
CXX      ?= g++
EMUL_CXXFLAGS := -O1 -g -std=c++17 -ffp-contract=off -fPIC -fvisibility=hidden -Wall -Wextra -Wno-unused-parameter -DNLPD_CU_EMUL -Ikernels/cuda/emul \
                 -Ikernels/cuda/emul/include -Icommon -Ikernels -Ikernels/cuda -MMD -MP
EMUL_OBJ := $(CUDA_SRC:%.cu=build/emul/%.o) build/emul/kernels/cuda/emul/cu_emul.o \
            build/emul/kernels/cuda/emul/cublas_emul.o build/emul/common/nlpd_error.o
EMUL_LIB := build/emul/libnlpd_cuda.so
EMUL_TEST := build/emul/tests/test_cuda_emul
ifneq ($(SANITIZE),1)
EMUL_ALL := $(EMUL_LIB) $(EMUL_TEST)
else
EMUL_ALL :=
endif
NLPD_LIBDIR_INSTALL := $(PREFIX)/lib/nlpd

FAULTS_BIN := $(BUILD)/tests/nlpd_faults

BENCH_SRC := $(wildcard bench/*/bench_*.c)
BENCH_BIN := $(patsubst %.c,$(BUILD)/bench/%,$(notdir $(BENCH_SRC)))

.PHONY: deb all deps models test check check-format check-includes check-unit demo bench clean format fuzz-build install \
        cuda soak

.DEFAULT_GOAL := all

MAN_PAGES := $(BUILD)/man/nlpd.1 $(BUILD)/man/nlpd.conf.5

all: $(BUILD)/nlpd $(UNIT_BIN) $(FUZZ_BIN) $(TOOL_BIN) $(BENCH_BIN) $(CUDA_ALL) $(EMUL_ALL) $(FAULTS_BIN) $(MAN_PAGES)

# nlpd.1 and nlpd.conf.5 from the binary's own help and config tables (scripts/gen-man.sh)
$(MAN_PAGES) &: $(BUILD)/nlpd scripts/gen-man.sh
	sh scripts/gen-man.sh $(BUILD)/nlpd $(BUILD)/man

$(BUILD)/nlpd: $(MAIN_OBJ) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# nlpd with injected faults (tests/integration/faults.c wraps internal functions) for test_kafka.sh's loss paths
$(FAULTS_BIN): tests/integration/faults.c $(MAIN_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(INCLUDES) -o $@ $< $(MAIN_OBJ) $(LIB) $(LDFLAGS) -Wl,--wrap=nlpd_offsets_add,--wrap=nlpd_pipeline_stop $(LDLIBS)

$(LIB): $(LIB_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

# The most specific pattern wins: stages/models/ is the models layer, the other stages/*/ folders are stages.
$(BUILD)/obj/common/%.o:        LAYER_INC = $(INC_common)
$(BUILD)/obj/kernels/%.o:       LAYER_INC = $(INC_kernels)
$(BUILD)/obj/stages/models/%.o: LAYER_INC = $(INC_models)
$(BUILD)/obj/stages/%.o:        LAYER_INC = $(INC_stages)
$(BUILD)/obj/daemon/%.o:        LAYER_INC = $(INC_daemon)

$(BUILD)/obj/%.o: %.c | $(STAGE_API)/nlpd_stage.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LAYER_INC) -c -o $@ $<

$(STAGE_API)/nlpd_stage.h:
	@mkdir -p $(dir $@)
	ln -sfr daemon/nlpd_stage.h $@

# The version `nlpd version`, nlpd_build_info and `make deb` report.
NLPD_VERSION ?= 0.1.0
$(BUILD)/obj/daemon/main.o $(BUILD)/obj/daemon/kafka_metrics.o: CFLAGS += -DNLPD_VERSION='"$(NLPD_VERSION)"'

# where nlpd looks for libnlpd_cuda.so after its own directory and $NLPD_LIBDIR
$(BUILD)/obj/kernels/backend.o: CFLAGS += -DNLPD_INSTALL_LIBDIR='"$(NLPD_LIBDIR_INSTALL)"'

cuda: $(CUDA_LIB)

emul: $(EMUL_LIB) $(EMUL_TEST)

build/emul/%.o: %.cu
	@mkdir -p $(dir $@)
	$(CXX) $(EMUL_CXXFLAGS) -x c++ -c -o $@ $<

build/emul/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(EMUL_CXXFLAGS) -c -o $@ $<

build/emul/common/nlpd_error.o: common/nlpd_error.c
	@mkdir -p $(dir $@)
	$(CC) $(OPT) -std=c11 -D_GNU_SOURCE -Wall -Wextra -fPIC -fvisibility=hidden -MMD -MP -Icommon -c -o $@ $<

$(EMUL_LIB): $(EMUL_OBJ)
	$(CXX) -shared -o $@ $^ -lpthread -Wl,-z,defs

# the emulator's own test (tests/unit/emul/): kernels that must run, and faults it must catch
$(EMUL_TEST): tests/unit/emul/test_cuda_emul.cu build/emul/kernels/cuda/emul/cu_emul.o build/emul/kernels/cuda/emul/cublas_emul.o
	@mkdir -p $(dir $@)
	$(CXX) $(EMUL_CXXFLAGS) -x c++ -o $@ $< -x none build/emul/kernels/cuda/emul/cu_emul.o \
	    build/emul/kernels/cuda/emul/cublas_emul.o -lpthread

build/cuda/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -c -o $@ $<

build/cuda/common/nlpd_error.o: common/nlpd_error.c
	@mkdir -p $(dir $@)
	$(CC) $(OPT) -std=c11 -D_GNU_SOURCE -Wall -Wextra -fPIC -fvisibility=hidden -MMD -MP -Icommon -c -o $@ $<

$(CUDA_LIB): $(CUDA_OBJ)
	$(NVCC) -shared -o $@ $^ -cudart shared $(if $(CUDA_LIBDIR),-L$(CUDA_LIBDIR) -Xlinker -rpath -Xlinker $(CUDA_LIBDIR)) \
	    -lcublasLt -lcublas -Xlinker -z -Xlinker defs -Xlinker --as-needed

$(BUILD)/tests/%: tests/unit/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(INCLUDES) -Itests/unit -o $@ $< $(LIB) $(LDFLAGS) $(LDLIBS)

$(BUILD)/tests/tool_%: tests/models/tool_%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(INCLUDES) -o $@ $< $(LIB) $(LDFLAGS) $(LDLIBS)

$(BUILD)/tests/tool_%: tests/integration/tool_%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(INCLUDES) -o $@ $< $(LIB) $(LDFLAGS) $(LDLIBS)

$(BUILD)/tests/tool_%: tests/soak/tool_%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(INCLUDES) -o $@ $< $(LIB) $(LDFLAGS) $(LDLIBS)

$(BUILD)/bench/bench_%: bench/*/bench_%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(INCLUDES) -o $@ $< $(LIB) $(LDFLAGS) $(LDLIBS)

# Fuzz targets: built with a replay main() here; `make fuzz-build CC=clang` adds libFuzzer.
$(BUILD)/tests/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/replay_main.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(INCLUDES) -o $@ $< tests/fuzz/replay_main.c $(LIB) $(LDFLAGS) $(LDLIBS)

fuzz-build:
	@mkdir -p build/libfuzzer
	for f in $(FUZZ_SRC); do \
	  clang -g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined $(INCLUDES) $(PKG_CFLAGS) \
	    -o build/libfuzzer/$$(basename $$f .c) $$f $(LIB_SRC) $(PKG_LIBS) -lm -pthread || exit 1; \
	done

deps:
	@sh scripts/setup-deps.sh

models:
	@sh scripts/fetch-models.sh

# The entry points users run: set-up first, then a fresh make (pkg-config results need the packages).
test:
	@sh scripts/setup-deps.sh
	@sh scripts/fetch-models.sh
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory SANITIZE=1 all
	@sh tests/run-tests.sh

# The demo builds only build/nlpd, silently (warnings and errors still show), and says so when it has to.
demo:
	@sh scripts/setup-deps.sh
	@sh scripts/fetch-models.sh
	@$(MAKE) --no-print-directory -q $(BUILD)/nlpd 2> /dev/null || \
	  echo "demo: building $(BUILD)/nlpd (a few minutes the first time)"
	@$(MAKE) --no-print-directory -s -j$$(nproc) $(BUILD)/nlpd
	@sh scripts/demo.sh

# The chaos soak (tests/soak/README.md): minutes, not part of `make test`; one table, exit 1 on a FAIL.
soak:
	@sh scripts/setup-deps.sh
	@sh scripts/fetch-models.sh
	@$(MAKE) --no-print-directory all
	@/usr/bin/python3 tests/soak/soak.py --self-test
	@/usr/bin/python3 tests/soak/soak.py

bench:
	@sh scripts/setup-deps.sh
	@sh scripts/fetch-models.sh
	@$(MAKE) --no-print-directory all
	@sh bench/langid/run.sh
	@sh bench/kafka/run.sh
	@sh bench/encoder/run.sh
	@sh bench/cache/run.sh
	@sh bench/translate/run.sh
	@DTYPE=int8 TORCH_DTYPE=int8 sh bench/translate/run.sh

# Binary, systemd unit (its paths set to PREFIX and SYSCONFDIR), sysusers entry, schema, docs and the GPU
# drop-in; the config only when none is there yet, mode 0640 (it may hold passwords: the README's next step
# gives it to group nlpd), with output.schema pointing at the installed schema (model paths stay relative to
# the unit's WorkingDirectory, /var/lib/nlpd). tests/integration/test_install.sh runs this and the README's steps.
install: $(BUILD)/nlpd $(CUDA_ALL) $(MAN_PAGES)
	install -D -m 0755 $(BUILD)/nlpd $(DESTDIR)$(PREFIX)/bin/nlpd
	install -D -m 0644 $(BUILD)/man/nlpd.1 $(DESTDIR)$(PREFIX)/share/man/man1/nlpd.1
	install -D -m 0644 $(BUILD)/man/nlpd.conf.5 $(DESTDIR)$(PREFIX)/share/man/man5/nlpd.conf.5
	install -D -m 0644 completion/nlpd.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/nlpd
	@if [ -f $(CUDA_LIB) ]; then \
	  echo install -D -m 0755 $(CUDA_LIB) $(DESTDIR)$(NLPD_LIBDIR_INSTALL)/libnlpd_cuda.so; \
	  install -D -m 0755 $(CUDA_LIB) $(DESTDIR)$(NLPD_LIBDIR_INSTALL)/libnlpd_cuda.so; fi
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(PREFIX)/share/doc/nlpd
	sed -e 's|/usr/local|$(PREFIX)|g' -e 's|/etc/nlpd|$(SYSCONFDIR)/nlpd|g' systemd/nlpd.service \
	  > $(DESTDIR)$(UNITDIR)/nlpd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/nlpd.service
	sed -e 's|/usr/local|$(PREFIX)|g' systemd/nlpd-gpu.conf > $(DESTDIR)$(PREFIX)/share/doc/nlpd/nlpd-gpu.conf
	chmod 0644 $(DESTDIR)$(PREFIX)/share/doc/nlpd/nlpd-gpu.conf
	install -D -m 0644 systemd/nlpd.sysusers.conf $(DESTDIR)$(PREFIX)/lib/sysusers.d/nlpd.conf
	install -D -m 0644 schemas/enriched.avsc $(DESTDIR)$(PREFIX)/share/nlpd/schemas/enriched.avsc
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/nlpd/README.md
	install -D -m 0644 conf/nlpd.conf $(DESTDIR)$(PREFIX)/share/doc/nlpd/nlpd.conf.example
	@if [ ! -e $(DESTDIR)$(SYSCONFDIR)/nlpd/nlpd.conf ]; then \
	  echo "install -m 0640 conf/nlpd.conf $(DESTDIR)$(SYSCONFDIR)/nlpd/nlpd.conf (output.schema: $(PREFIX)/share/nlpd/schemas/enriched.avsc)"; \
	  install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/nlpd && \
	  sed 's|"schemas/enriched.avsc"|"$(PREFIX)/share/nlpd/schemas/enriched.avsc"|' conf/nlpd.conf \
	    > $(DESTDIR)$(SYSCONFDIR)/nlpd/nlpd.conf.new && \
	  chmod 0640 $(DESTDIR)$(SYSCONFDIR)/nlpd/nlpd.conf.new && \
	  mv $(DESTDIR)$(SYSCONFDIR)/nlpd/nlpd.conf.new $(DESTDIR)$(SYSCONFDIR)/nlpd/nlpd.conf; \
	else echo "keeping the existing $(DESTDIR)$(SYSCONFDIR)/nlpd/nlpd.conf"; fi

# A Debian package of what `make install` installs plus the models (scripts/make-deb.sh; tests/integration/test_deb.sh).
deb: $(BUILD)/nlpd $(CUDA_ALL)
	@sh scripts/make-deb.sh $(NLPD_VERSION)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

# `make check`: the fast gate CI runs before `make test` (seconds to a few minutes, no Kafka, no models needed
# beyond what the unit tests skip without): formatting with the committed .clang-format, the include direction,
# and the unit tests of the normal build. FORMAT_FILES scopes the format check (default: every tracked C file),
# e.g. make check FORMAT_FILES="$$(git diff --name-only main -- '*.c' '*.h')".
FORMAT_FILES ?= $(shell git ls-files '*.c' '*.h' 2> /dev/null)

# Set-up first (clang-format and the libraries), then a fresh make: pkg-config results need the packages.
check:
	@sh scripts/setup-deps.sh
	@$(MAKE) --no-print-directory check-format check-includes check-unit

check-format:
	@command -v clang-format > /dev/null || { echo "check-format: clang-format is missing (make deps)"; exit 1; }
	@clang-format --dry-run --Werror $(FORMAT_FILES) && echo "check-format: $(words $(FORMAT_FILES)) files formatted"

# Every unit binary; the summary counts binaries (each prints its own `N passed, N failed`).
check-unit: $(UNIT_BIN)
	@p=0; f=0; for t in $(UNIT_BIN); do echo "== $$t"; \
	  if timeout 600 ./$$t < /dev/null; then p=$$((p + 1)); else f=$$((f + 1)); echo "== $$t: FAILED"; fi; \
	done; echo "check-unit: $$p passed, $$f failed"; [ $$f -eq 0 ]

# A wrong-way include fails to compile (tests/check_includes.sh probes each layer with its own flags).
check-includes: $(STAGE_API)/nlpd_stage.h
	@CC="$(CC)" PKG_CFLAGS="$(PKG_CFLAGS)" INC_common="$(INC_common)" INC_kernels="$(INC_kernels)" \
	  INC_models="$(INC_models)" INC_stages="$(INC_stages)" INC_daemon="$(INC_daemon)" sh tests/check_includes.sh

clean:
	rm -rf build

-include $(LIB_OBJ:.o=.d) $(MAIN_OBJ:.o=.d) $(CUDA_OBJ:.o=.d) $(EMUL_OBJ:.o=.d)
