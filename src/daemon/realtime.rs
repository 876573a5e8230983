//! `ha.rt_priority` and `ha.lock_memory`: the VRRP loop (the main thread) runs SCHED_FIFO and
//! the process's memory is locked, so adverts keep their pace on a saturated or swapping host
//! (keepalived's `vrrp_rt_priority` and `vrrp_no_swap`). Every other thread — the data-path
//! worker, nft's readers, tokio's blocking pool — runs at normal priority: the heavy work must
//! never starve the adverts nor, at real-time priority, the rest of the box.

/// Puts the calling thread under SCHED_FIFO at `priority` (1..=99) and locks the process's
/// memory, each as asked; each failure is logged with its fix, and the daemon goes on.
pub fn apply(rt_priority: Option<u8>, lock_memory: bool) {
    if let Some(p) = rt_priority {
        let param = libc::sched_param {
            sched_priority: i32::from(p),
        };
        // SAFETY: sched_setscheduler reads `param` (a valid, initialised sched_param) and
        // changes the scheduling of the calling thread (pid 0); no memory is written.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
        if rc == 0 {
            log::info!("VRRP loop: SCHED_FIFO priority {p}");
        } else {
            log::warn!(
                "VRRP loop: SCHED_FIFO priority {p} refused ({}); run as root or grant \
                 CAP_SYS_NICE; adverts keep normal scheduling",
                std::io::Error::last_os_error()
            );
        }
    }
    if lock_memory {
        // On fault, not at once: thread stacks and arenas are locked as they are touched,
        // not reserved in full.
        let flags = libc::MCL_CURRENT | libc::MCL_FUTURE | libc::MCL_ONFAULT;
        // SAFETY: mlockall takes flags only and touches no memory of ours.
        #[allow(unsafe_code)]
        let mut rc = unsafe { libc::mlockall(flags) };
        if rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
            // A kernel before 4.4 has no MCL_ONFAULT.
            // SAFETY: as above.
            #[allow(unsafe_code)]
            let again = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
            rc = again;
        }
        if rc == 0 {
            log::info!("memory locked (mlockall): the VRRP loop is never paged out");
        } else {
            log::warn!(
                "mlockall refused ({}); run as root or raise RLIMIT_MEMLOCK",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Puts the calling thread back under normal scheduling (a thread inherits its creator's
/// policy): the start of every thread that is not the VRRP loop.
pub fn normal_scheduling() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: as in `apply`: reads a valid sched_param, changes the calling thread only.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
    if rc != 0 {
        log::debug!(
            "normal scheduling for a helper thread: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The calling thread's scheduling policy and priority.
#[cfg(test)]
fn current() -> (i32, i32) {
    // SAFETY: sched_getscheduler takes a pid only.
    #[allow(unsafe_code)]
    let policy = unsafe { libc::sched_getscheduler(0) };
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_getparam writes one sched_param into `param`, which we own.
    #[allow(unsafe_code)]
    let _ = unsafe { libc::sched_getparam(0, &mut param) };
    (policy, param.sched_priority)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_helper_thread_of_a_realtime_thread_runs_normally() {
        // In a thread of its own: the test harness's threads must stay as they are.
        let r = std::thread::spawn(|| {
            apply(Some(5), false);
            let rt = current();
            if rt.0 != libc::SCHED_FIFO {
                return None; // not root: nothing to check
            }
            let helper = std::thread::spawn(|| {
                let inherited = current();
                normal_scheduling();
                (inherited, current())
            })
            .join()
            .unwrap();
            Some((rt, helper))
        })
        .join()
        .unwrap();
        let Some((rt, (inherited, after))) = r else {
            eprintln!("SKIP a_helper_thread_of_a_realtime_thread_runs_normally: needs root");
            assert!(std::env::var("PROXYHA_REQUIRE_ROOT_TESTS").as_deref() != Ok("1"));
            return;
        };
        assert_eq!(rt, (libc::SCHED_FIFO, 5));
        assert_eq!(
            inherited,
            (libc::SCHED_FIFO, 5),
            "threads inherit the policy"
        );
        assert_eq!(after, (libc::SCHED_OTHER, 0));
    }
}
