//go:build !linux

package testkit

import "syscall"

func prosodyProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
