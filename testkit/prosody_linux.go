package testkit

import "syscall"

func prosodyProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		// Its own process group: a Ctrl-C on `go test` reaches it through
		// our cleanup, not before.
		Setpgid: true,
		// A test binary killed by -timeout or SIGKILL runs no cleanup; the
		// kernel then ends prosody rather than leave it holding its port.
		Pdeathsig: syscall.SIGKILL,
	}
}
