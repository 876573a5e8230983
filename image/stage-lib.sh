#!/usr/bin/env bash
# Stages and budgets for the QEMU tests (test-boot.sh, qemu-lib.sh and the tests on it); sourced.
#
# The tests run QEMU under TCG on shared hosts of any speed and load, so no wait has a fixed
# deadline:
#   - each boot's first stage, QEMU start -> GRUB's "proxyha: booting slot" line, is measured and
#     compared with its nominal time on an idle host (STAGE_NOMINAL_GRUB); the ratio, at least 1,
#     is the boot's scale factor, printed once per boot with the budgets it gives;
#   - a console wait fails on a stall: no new console output for STAGE_STALL s x scale (a normal
#     boot's longest quiet spell is GRUB loading the kernel, ~10 s; later ones are protocol timers
#     of a few seconds and proxyha's stop); before the scale is known (the firmware, which prints
#     little) the stall budget is STAGE_FIRST_BUDGET s;
#   - a wait that watches something else (a fetch through the VIP) gets NOMINAL x scale x
#     STAGE_MARGIN s;
#   - every wait fails at the hard cap, max(STAGE_CAP, 150 s x scale) since the VM started or, for
#     a VM that reboots itself, since its latest GRUB line; only a hang with a busy console (a
#     respawn loop) reaches it;
#   - load that starts after the first stage must not fail a wait either: budgets are counted in
#     "CPU-available" seconds. A tick in which the host had at least half a CPU idle counts in full;
#     in a tick in which every CPU was busy, only the CPU time QEMU got counts (a guest that is busy
#     but starved by other work is slow, not stalled). So a quiet guest on a saturated host is
#     given more wall time, never less; STAGE_WALL_CAP (3 h) bounds everything;
#   - a real fault fails at once: the VM's QEMU exits, or a fatal line shows on a running VM's
#     console (STAGE_FATAL: kernel panic, the initramfs's rescue shell, a Rust panic, ...; and the
#     test's own stage_forbid patterns; a test that provokes one of STAGE_FATAL on purpose edits
#     the array after sourcing).
# Every stage prints the VM's elapsed time and the stage's own duration (wall clock); a failure
# names the stage, how long it ran, the budget it broke and shows the console's last lines.
#
# API (VM: a short name such as vm1; PATTERN: a fixed string, matched within a console line):
#   stage_boot VM CONSOLE CMD...        starts CMD (QEMU, writing its serial console to CONSOLE;
#                                       exec'ing wrappers such as nice or ip netns exec are fine)
#                                       in the background; its stderr goes to VM.qemu.log next to
#                                       CONSOLE; the VM's clock starts
#   stage_expect VM PATTERN DESC        waits until VM's console shows PATTERN (anywhere), prints
#                                       "  VM  ELAPSEDs  +STAGEs  DESC"; the stage starts where
#                                       the VM's previous stage ended
#   stage_line VM VAR                   sets VAR to the number the next console line will have and
#                                       marks now as the start of the next stage_expect_from
#                                       (not in $(...): it keeps state)
#   stage_expect_from VM LINE PATTERN DESC   the same, counting only lines from LINE on (a line
#                                       that was incomplete at stage_line counts); the stage's
#                                       time is measured from the stage_line call
#   stage_forbid VM PATTERN DESC        from the next console line on, PATTERN fails at once
#   stage_until VM DESC NOMINAL CMD...  runs CMD every 0.5 s until it succeeds, within NOMINAL x
#                                       scale x STAGE_MARGIN s (for what is not on the console)
#   stage_poweroff VM DESC              waits until VM's QEMU exits (after an ACPI power-down or a
#                                       shutdown typed on the console); a stall fails
#   stage_scale VM                      prints the scale factor (1.0 until measured)
#   stage_budget VM NOMINAL             prints NOMINAL x scale x STAGE_MARGIN, in whole seconds
#   stage_elapsed VM                    prints the seconds since VM started (e.g. 12.3)
#   stage_fail VM MESSAGE               prints "NAME: FAIL: MESSAGE" and VM's console tail (every
#                                       running VM's with VM ""), exits 1
#   stage_cleanup                       kills (by PID) the VMs still running and reaps them
# Tunables (environment): STAGE_NOMINAL_GRUB (s, default 5; each test sets its own),
# STAGE_STALL (60), STAGE_FIRST_BUDGET (60 x STAGE_NOMINAL_GRUB), STAGE_MARGIN (3), STAGE_CAP
# (900), STAGE_WALL_CAP (10800), STAGE_NAME (the message prefix, default the script's name).

STAGE_NAME=${STAGE_NAME:-$(basename "$0" .sh)}
STAGE_STALL=${STAGE_STALL:-60}
STAGE_MARGIN=${STAGE_MARGIN:-3}
STAGE_CAP=${STAGE_CAP:-900}
STAGE_WALL_CAP=${STAGE_WALL_CAP:-10800}
STAGE_FIRST_PATTERN=${STAGE_FIRST_PATTERN:-proxyha: booting slot}
# Lines that mean a real fault whatever the test waits for, as "PATTERN|DESCRIPTION", the more
# specific first. Not here: "BUG: soft lockup" and RCU stall warnings, which a slow host alone
# produces under TCG.
STAGE_FATAL=(
	"IO-APIC + timer doesn't work|kernel panic in the kernel's boot-time timer check (its vCPU was starved by a loaded host; the kernel command line has no no_timer_check)"
	"Kernel panic|kernel panic"
	"initramfs: dropping to a shell|the initramfs gave up (root slot not found or not mountable)"
	"proxyha: no good slot left|GRUB found no good slot"
	"proxyha: WARNING:|the appliance's start-up warned"
	"panicked at|a Rust panic (proxyha)"
)
declare -gA STAGE_PID STAGE_T0 STAGE_CONSOLE STAGE_SCALE STAGE_LAST STAGE_MARK STAGE_BYTES \
	STAGE_PROGRESS STAGE_FORBID STAGE_EFF STAGE_QUIET STAGE_CPU STAGE_TICK STAGE_BOOTS STAGE_BOOT_EFF \
	STAGE_BOOT_T
STAGE_VMS=()
STAGE_MATCH=0
_stage_clk=$(getconf CLK_TCK 2>/dev/null || echo 100)
_stage_ncpu=$(nproc 2>/dev/null || echo 1)
_stage_host_prev="" # "TOTAL IDLE" jiffies of /proc/stat at the previous tick

# ---- time ------------------------------------------------------------------------------------------
_stage_now() { echo "${EPOCHREALTIME/[.,]/}"; } # microseconds
_stage_us_of() { # SECONDS (e.g. 5 or 4.5): prints microseconds
	local i=${1%%.*} f=""
	[[ $1 == *.* ]] && f=${1#*.}
	f=${f}000000
	echo $((10#${i:-0} * 1000000 + 10#${f:0:6}))
}
_stage_fmt() { printf '%d.%d' $(($1 / 1000000)) $(($1 % 1000000 / 100000)); } # US: seconds, 1 decimal
_stage_scale100() { echo "${STAGE_SCALE[$1]:-100}"; } # VM: the scale factor x 100
stage_scale() { # VM
	local s
	s=$(_stage_scale100 "$1")
	printf '%d.%d\n' $((s / 100)) $((s % 100 / 10))
}
stage_elapsed() { # VM
	_stage_fmt $(($(_stage_now) - STAGE_T0[$1]))
	echo
}
stage_budget() { echo $(($2 * STAGE_MARGIN * $(_stage_scale100 "$1") / 100)); } # VM NOMINAL

_stage_stall_us() { # VM: the stall budget
	if [ -n "${STAGE_SCALE[$1]}" ]; then
		echo $((STAGE_STALL * 10000 * STAGE_SCALE[$1]))
	elif [ -n "${STAGE_FIRST_BUDGET:-}" ]; then
		_stage_us_of "$STAGE_FIRST_BUDGET"
	else
		echo $((60 * $(_stage_us_of "${STAGE_NOMINAL_GRUB:-5}")))
	fi
}
_stage_cap_us() { # VM: the hard cap
	local s cap
	s=$(_stage_scale100 "$1")
	cap=$((STAGE_CAP * 1000000))
	[ $((150 * 10000 * s)) -gt "$cap" ] && cap=$((150 * 10000 * s))
	echo "$cap"
}

# ---- VMs -------------------------------------------------------------------------------------------
stage_boot() { # VM CONSOLE CMD...
	local vm=$1 console=$2
	shift 2
	: >"$console"
	: >"$console.arrivals" # "TIME_US LINES" whenever the console grew: when each line arrived
	STAGE_CONSOLE[$vm]=$console
	STAGE_SCALE[$vm]=""
	STAGE_BYTES[$vm]=0
	STAGE_FORBID[$vm]=""
	STAGE_EFF[$vm]=0   # CPU-available microseconds since the start
	STAGE_QUIET[$vm]=0 # CPU-available microseconds since the console last grew
	STAGE_CPU[$vm]=0   # QEMU's CPU time (clock ticks) at the last tick
	STAGE_BOOTS[$vm]=0 # GRUB lines seen: boots (a VM without -no-reboot reboots itself)
	STAGE_BOOT_EFF[$vm]=0
	STAGE_T0[$vm]=$(_stage_now)
	STAGE_BOOT_T[$vm]=${STAGE_T0[$vm]}
	STAGE_TICK[$vm]=${STAGE_T0[$vm]}
	STAGE_LAST[$vm]=${STAGE_T0[$vm]}
	STAGE_MARK[$vm]=${STAGE_T0[$vm]}
	STAGE_PROGRESS[$vm]=${STAGE_T0[$vm]}
	[[ " ${STAGE_VMS[*]} " == *" $vm "* ]] || STAGE_VMS+=("$vm")
	"$@" 2>"$(dirname "$console")/$vm.qemu.log" &
	STAGE_PID[$vm]=$!
}

# Scans VM's console once: prints "LINES BYTES FIRST NFIRST MATCH FATAL DESC|TEXT": FIRST is the
# line of STAGE_FIRST_PATTERN and NFIRST the number of lines holding it, MATCH the first line >= FROM
# holding PATTERN, FATAL the first fatal line (STAGE_FATAL from line 1, stage_forbid patterns from
# their lines); 0 for none.
_stage_scan() { # VM [PATTERN FROM]
	local vm=$1 f=() fx
	for fx in "${STAGE_FATAL[@]}"; do f+=("1|$fx"); done
	if [ -n "${STAGE_FORBID[$vm]}" ]; then
		while IFS= read -r fx; do f+=("$fx"); done <<<"${STAGE_FORBID[$vm]%$'\n'}"
	fi
	SP_FIRST=$STAGE_FIRST_PATTERN SP_PAT=${2:-} SP_FROM=${3:-1} SP_FATAL=$(printf '%s\n' "${f[@]}") awk '
		BEGIN {
			n = split(ENVIRON["SP_FATAL"], fl, "\n")
			for (i = 1; i <= n; i++) {
				if (fl[i] == "") continue
				k++; split(fl[i], p, "|"); ffrom[k] = p[1] + 0; fpat[k] = p[2]; fdesc[k] = p[3]
			}
			first = ENVIRON["SP_FIRST"]; pat = ENVIRON["SP_PAT"]; from = ENVIRON["SP_FROM"] + 0
		}
		{
			bytes += length($0) + 1
			if (first != "" && index($0, first)) { nfirst++; if (!fl_first) fl_first = NR }
			if (!m && pat != "" && NR >= from && index($0, pat)) m = NR
			if (!fat) for (i = 1; i <= k; i++) if (NR >= ffrom[i] && index($0, fpat[i])) {
				fat = NR; fd = fdesc[i] "|" $0; break
			}
		}
		END { gsub(/\r/, "", fd); printf "%d %d %d %d %d %d %s\n", NR, bytes, fl_first, nfirst, m, fat, fd }
	' "${STAGE_CONSOLE[$vm]}"
}

# Arrival time (us) of console line L of VM: the first tick that saw it.
_stage_arrival() { # VM L
	awk -v l="$2" '$2 >= l { print $1; exit }' "${STAGE_CONSOLE[$1]}.arrivals"
}

# Whether the host had at least half a CPU idle since the previous tick (status 0) or not.
_stage_host_idle() {
	local _c u n s i w q sq st total idle busy=0
	read -r _c u n s i w q sq st _ </proc/stat
	total=$((u + n + s + i + w + q + sq + st))
	idle=$((i + w))
	if [ -n "$_stage_host_prev" ]; then
		local pt=${_stage_host_prev% *} pi=${_stage_host_prev#* }
		# idle CPUs x 100 = d_idle / d_total x ncpu x 100
		[ $((total - pt)) -gt 0 ] && [ $(((idle - pi) * 100 * _stage_ncpu / (total - pt))) -lt 50 ] && busy=1
	fi
	_stage_host_prev="$total $idle"
	return $busy
}

# Adds the CPU-available time since VM's previous tick to its counters.
_stage_account() { # VM NOW_US HOST_IDLE(0|1)
	local vm=$1 now=$2 dt cpu=${STAGE_CPU[$1]} line f eff
	dt=$((now - STAGE_TICK[$vm]))
	[ "$dt" -gt 2000000 ] && dt=2000000 # between waits nobody ticks: count at most 2 s
	STAGE_TICK[$vm]=$now
	if [ -n "${STAGE_PID[$vm]}" ] && read -r line 2>/dev/null <"/proc/${STAGE_PID[$vm]}/stat"; then
		read -ra f <<<"${line##*) }"
		cpu=$((f[11] + f[12])) # utime + stime of all threads
	fi
	if [ "$3" = 1 ]; then
		eff=$dt
	else # every CPU busy: only what QEMU got counts
		eff=$(((cpu - STAGE_CPU[$vm]) * 1000000 / _stage_clk))
		[ "$eff" -gt "$dt" ] && eff=$dt
	fi
	STAGE_CPU[$vm]=$cpu
	STAGE_EFF[$vm]=$((STAGE_EFF[$vm] + eff))
	STAGE_QUIET[$vm]=$((STAGE_QUIET[$vm] + eff))
}

# One look at every running VM (and at VM, the one waited on, which may have exited): accounts
# time, records line arrivals and output, measures the first stage, fails at once on a fatal line.
# With PATTERN, sets STAGE_MATCH to VM's first line >= FROM holding it (0: none).
_stage_tick() { # [VM PATTERN FROM]
	local v now lines bytes first nfirst match fat fdesc t s idle=0
	_stage_host_idle && idle=1
	STAGE_MATCH=0
	for v in "${STAGE_VMS[@]}"; do
		[ -n "${STAGE_PID[$v]}" ] || [ "$v" = "${1:-}" ] || continue
		if [ "$v" = "${1:-}" ]; then
			read -r lines bytes first nfirst match fat fdesc < <(_stage_scan "$v" "${2:-}" "${3:-1}")
			STAGE_MATCH=$match
		else
			read -r lines bytes first nfirst match fat fdesc < <(_stage_scan "$v")
		fi
		now=$(_stage_now)
		_stage_account "$v" "$now" "$idle"
		if [ "$bytes" -ne "${STAGE_BYTES[$v]}" ]; then
			STAGE_BYTES[$v]=$bytes
			STAGE_PROGRESS[$v]=$now
			STAGE_QUIET[$v]=0
			echo "$now $lines" >>"${STAGE_CONSOLE[$v]}.arrivals"
		fi
		if [ "$nfirst" -gt "${STAGE_BOOTS[$v]}" ]; then # a reboot: the hard cap starts again
			[ "${STAGE_BOOTS[$v]}" -eq 0 ] || { STAGE_BOOT_EFF[$v]=${STAGE_EFF[$v]}; STAGE_BOOT_T[$v]=$now; }
			STAGE_BOOTS[$v]=$nfirst
		fi
		if [ -z "${STAGE_SCALE[$v]}" ] && [ "$first" -gt 0 ]; then
			t=$(_stage_arrival "$v" "$first")
			t=$((${t:-$now} - STAGE_T0[$v]))
			s=$((t * 100 / $(_stage_us_of "${STAGE_NOMINAL_GRUB:-5}")))
			[ "$s" -lt 100 ] && s=100
			STAGE_SCALE[$v]=$s
			printf '  %-6s scale %s: GRUB after %ss (nominal %ss on an idle host); stall budget %ss, hard cap %ss\n' \
				"$v" "$(stage_scale "$v")" "$(_stage_fmt "$t")" "${STAGE_NOMINAL_GRUB:-5}" \
				"$(_stage_fmt "$(_stage_stall_us "$v")")" "$(_stage_fmt "$(_stage_cap_us "$v")")"
		fi
		if [ "$fat" -gt 0 ]; then
			stage_fail "$v" "$v: ${fdesc%%|*} at console line $fat, $(stage_elapsed "$v")s after start: ${fdesc#*|}"
		fi
	done
}

# ---- budgets ---------------------------------------------------------------------------------------
# Fails the current wait when VM's QEMU exited or a budget is spent.
_stage_check() { # VM WAIT_START_US WAIT_START_EFF WHAT [BUDGET_US]
	local vm=$1 rc=0
	if [ -n "${STAGE_PID[$vm]}" ] && ! kill -0 "${STAGE_PID[$vm]}" 2>/dev/null; then
		wait "${STAGE_PID[$vm]}" || rc=$?
		STAGE_PID[$vm]=""
		stage_fail "$vm" "$vm: QEMU exited (status $rc) $(stage_elapsed "$vm")s after start, during: $4 (stage running $(_stage_fmt $(($(_stage_now) - $2)))s)"
	elif [ -z "${STAGE_PID[$vm]}" ]; then
		stage_fail "$vm" "$vm: not running, during: $4"
	fi
	_stage_budget_check "$@"
}

_stage_counted() { # US_WALL US_COUNTED: "12.0s" or "212.0s (31.0s of it with a CPU for QEMU)"
	if [ $(($1 - $2)) -gt 1000000 ]; then
		echo "$(_stage_fmt "$1")s ($(_stage_fmt "$2")s of it with a CPU for QEMU)"
	else
		echo "$(_stage_fmt "$1")s"
	fi
}

# Fails the current wait when its budget is spent (BUDGET_US if given, else the stall budget) or
# at the caps. Budgets count CPU-available time (see the top).
_stage_budget_check() { # VM WAIT_START_US WAIT_START_EFF WHAT [BUDGET_US]
	local vm=$1 start=$2 effstart=$3 what=$4 now ran quiet wall stall cap how
	now=$(_stage_now)
	ran=$((STAGE_EFF[$vm] - effstart))
	if [ -n "${5:-}" ]; then
		[ "$ran" -le "$5" ] ||
			stage_fail "$vm" "$vm: $what: not done after $(_stage_counted $((now - start)) "$ran") (budget $(_stage_fmt "$5")s = nominal x scale $(stage_scale "$vm") x margin $STAGE_MARGIN)"
	else
		quiet=${STAGE_QUIET[$vm]}
		[ "$quiet" -gt "$ran" ] && quiet=$ran # quiet since the wait began at most
		wall=$((now - STAGE_PROGRESS[$vm]))
		[ "$wall" -gt $((now - start)) ] && wall=$((now - start))
		stall=$(_stage_stall_us "$vm")
		if [ -n "${STAGE_SCALE[$vm]}" ]; then
			how="${STAGE_STALL}s x scale $(stage_scale "$vm")"
		else
			how="before GRUB, scale not measured yet"
		fi
		[ "$quiet" -le "$stall" ] ||
			stage_fail "$vm" "$vm: $what: stalled, no console output for $(_stage_counted "$wall" "$quiet") (stall budget $(_stage_fmt "$stall")s, $how); stage running $(_stage_fmt $((now - start)))s"
	fi
	cap=$(_stage_cap_us "$vm")
	local beff=$((STAGE_EFF[$vm] - STAGE_BOOT_EFF[$vm])) bwall=$((now - STAGE_BOOT_T[$vm])) since="the VM started"
	[ "${STAGE_BOOTS[$vm]}" -le 1 ] || since="its boot ${STAGE_BOOTS[$vm]} (GRUB)"
	[ "$beff" -le "$cap" ] && [ "$bwall" -le $((STAGE_WALL_CAP * 1000000)) ] ||
		stage_fail "$vm" "$vm: $what: hard cap reached, $(_stage_counted "$bwall" "$beff") since $since (cap $(_stage_fmt "$cap")s, wall cap ${STAGE_WALL_CAP}s); stage running $(_stage_fmt $((now - start)))s"
}

# ---- waits -----------------------------------------------------------------------------------------
_stage_print() { # VM AT_US STAGE_US DESC
	printf '  %-6s %6ss  +%5ss  %s\n' "$1" "$(_stage_fmt $(($2 - STAGE_T0[$1])))" "$(_stage_fmt "$3")" "$4"
}

_stage_wait_line() { # VM FROM STAGE_START_US PATTERN DESC
	local vm=$1 from=$2 sstart=$3 pat=$4 desc=$5 start effstart at what
	start=$(_stage_now)
	effstart=${STAGE_EFF[$vm]}
	what="\"$desc\" (console: \"$pat\""
	[ "$from" -le 1 ] || what+=" from line $from"
	what+=")"
	while :; do
		_stage_tick "$vm" "$pat" "$from"
		[ "$STAGE_MATCH" -gt 0 ] && break
		_stage_check "$vm" "$start" "$effstart" "$what"
		sleep 0.25
	done
	at=$(_stage_arrival "$vm" "$STAGE_MATCH")
	at=${at:-$(_stage_now)}
	[ "$at" -lt "$sstart" ] && at=$sstart
	_stage_print "$vm" "$at" $((at - sstart)) "$desc"
	STAGE_LAST[$vm]=$at
}

stage_expect() { # VM PATTERN DESC
	_stage_wait_line "$1" 1 "${STAGE_LAST[$1]}" "$2" "$3"
}

stage_line() { # VM VAR
	_stage_tick
	STAGE_MARK[$1]=$(_stage_now)
	printf -v "$2" '%d' $(($(wc -l <"${STAGE_CONSOLE[$1]}") + 1))
}

stage_expect_from() { # VM LINE PATTERN DESC
	_stage_wait_line "$1" "$2" "${STAGE_MARK[$1]}" "$3" "$4"
}

stage_forbid() { # VM PATTERN DESC
	STAGE_FORBID[$1]+="$(($(wc -l <"${STAGE_CONSOLE[$1]}") + 1))|$2|$3"$'\n'
}

stage_until() { # VM DESC NOMINAL CMD...
	local vm=$1 desc=$2 budget start effstart now
	budget=$(($3 * STAGE_MARGIN * 10000 * $(_stage_scale100 "$vm")))
	shift 3
	_stage_tick
	start=$(_stage_now)
	effstart=${STAGE_EFF[$vm]}
	until "$@"; do
		_stage_tick
		_stage_check "$vm" "$start" "$effstart" "$desc" "$budget"
		sleep 0.5
	done
	now=$(_stage_now)
	_stage_print "$vm" "$now" $((now - start)) "$desc"
	STAGE_LAST[$vm]=$now
}

stage_poweroff() { # VM DESC
	local vm=$1 desc=$2 start effstart now rc=0
	start=$(_stage_now)
	effstart=${STAGE_EFF[$vm]}
	while kill -0 "${STAGE_PID[$vm]}" 2>/dev/null; do
		_stage_tick
		_stage_budget_check "$vm" "$start" "$effstart" "$desc (waiting for QEMU to exit)"
		sleep 0.25
	done
	wait "${STAGE_PID[$vm]}" || rc=$?
	STAGE_PID[$vm]=""
	_stage_tick "$vm"
	now=$(_stage_now)
	[ "$rc" -eq 0 ] || stage_fail "$vm" "$vm: QEMU exited with status $rc after the power-down"
	_stage_print "$vm" "$now" $((now - STAGE_LAST[$vm])) "$desc"
	STAGE_LAST[$vm]=$now
}

# ---- failure and clean-up --------------------------------------------------------------------------
stage_fail() { # VM MESSAGE
	local vm=$1 v shown=0
	echo "$STAGE_NAME: FAIL: $2" >&2
	for v in "${STAGE_VMS[@]}"; do
		if [ "$v" = "$vm" ] || { [ -z "$vm" ] && [ -n "${STAGE_PID[$v]}" ]; }; then
			_stage_tail "$v"
			shown=1
		fi
	done
	[ "$shown" = 1 ] || [ "${#STAGE_VMS[@]}" -eq 0 ] || _stage_tail "${STAGE_VMS[-1]}"
	exit 1
}
_stage_tail() { # VM
	local c=${STAGE_CONSOLE[$1]} q
	q=$(dirname "$c")/$1.qemu.log
	echo "---- $1 console (last 40 lines; $(stage_elapsed "$1")s since the VM started) ----" >&2
	tail -n 40 "$c" | tr -d '\r' >&2
	if [ -s "$q" ]; then
		echo "---- $1 QEMU stderr ----" >&2
		tail -n 10 "$q" >&2
	fi
}

stage_cleanup() {
	local v p
	for v in "${STAGE_VMS[@]}"; do
		p=${STAGE_PID[$v]}
		# An exited VM may be reaped already: kill fails, which must not end the clean-up (set -e)
		if [ -n "$p" ]; then kill "$p" 2>/dev/null || true; fi
	done
	for v in "${STAGE_VMS[@]}"; do
		p=${STAGE_PID[$v]}
		[ -n "$p" ] && { wait "$p" 2>/dev/null || true; }
		STAGE_PID[$v]=""
	done
	return 0
}
