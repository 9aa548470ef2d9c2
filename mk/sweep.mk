# Sweeps and executors (included by the Makefile; uses its BIN, STAMP, RESULTS, EXECUTOR).
#   make sweep SWEEP=sweeps/paper.yaml [EXECUTOR=local WORKERS=2 GPUS=0,1]
#   make sweep SWEEP=sweeps/paper.yaml EXECUTOR=slurm PARTITION=gpu GPUS_PER_RUN=1 TIME=1440
#   make sweep SWEEP=sweeps/paper.yaml DRY_RUN=1      # the plan, the preflight checks, the cost estimate
#   make bench ... EXECUTOR=slurm PARTITION=gpu       # bench passes $(EXECUTOR_ARGS)
# Values given here override the sweep file; unset ones leave it alone.
SWEEP         ?= sweeps/smoke.yaml
WORKERS       ?=
GPUS          ?=
PARTITION     ?=
ACCOUNT       ?=
QOS           ?=
TIME          ?=
GPUS_PER_RUN  ?=
CPUS_PER_RUN  ?=
MEM_GB        ?=
PARALLELISM   ?=
SBATCH        ?=
SETUP         ?=
WAIT          ?=
RETRY_FAILED  ?=
DRY_RUN       ?=
SWEEP_ARGS    ?=

_opt = $(if $(strip $(2)),$(1) $(2))
# --executor only when EXECUTOR was given on the command line or in the environment, so that a
# sweep file's `executor:` is not overridden by the Makefile's default.
_executor = $(if $(filter command line environment,$(origin EXECUTOR)),--executor $(EXECUTOR))
EXECUTOR_ARGS = $(_executor) \
  $(call _opt,--workers,$(WORKERS)) $(call _opt,--gpus,$(GPUS)) \
  $(call _opt,--partition,$(PARTITION)) $(call _opt,--account,$(ACCOUNT)) $(call _opt,--qos,$(QOS)) \
  $(call _opt,--time,$(TIME)) $(call _opt,--gpus-per-run,$(GPUS_PER_RUN)) \
  $(call _opt,--cpus-per-run,$(CPUS_PER_RUN)) $(call _opt,--mem-gb,$(MEM_GB)) \
  $(call _opt,--array-parallelism,$(PARALLELISM)) \
  $(foreach s,$(SBATCH),--sbatch $(s)) $(if $(SETUP),--setup "$(SETUP)") $(if $(WAIT),--wait)
# RESULTS: only when given, so that the sweep file's `results:` is kept otherwise.
_results = $(if $(filter command line environment,$(origin RESULTS)),--results $(RESULTS))

.PHONY: sweep sweep-status

sweep: $(STAMP)
	$(BIN)/dgbench sweep --file $(SWEEP) $(_results) $(EXECUTOR_ARGS) \
	  $(if $(RETRY_FAILED),--retry-failed) $(if $(DRY_RUN),--dry-run) $(SWEEP_ARGS)
