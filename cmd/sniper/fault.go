package main

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"

	"sniper/actors"
)

// faultEnv arms a test-only fault point: "point:N" makes the process kill
// itself (SIGKILL, no cleanup) the N-th time it reaches point. The fault
// suite uses it to crash the sniper exactly where a crash is most likely
// to lose or repeat something. Unset, it costs nothing.
const faultEnv = "SNIPER_TEST_FAULT"

var faultPoints = []string{actors.FaultBeforeDecide, actors.FaultAfterCommit, actors.FaultAfterSend, actors.FaultAfterInboundWrite, actors.FaultBetweenGroupCommits}

func faultHookFromEnv(logger *slog.Logger) (actors.FaultHook, error) {
	spec := os.Getenv(faultEnv)
	if spec == "" {
		return nil, nil
	}
	point, nStr, _ := strings.Cut(spec, ":")
	n, err := strconv.Atoi(nStr)
	valid := false
	for _, p := range faultPoints {
		valid = valid || p == point
	}
	if !valid || err != nil || n < 1 {
		return nil, fmt.Errorf("%s=%q: want POINT:N with N >= 1 and POINT one of %s", faultEnv, spec, strings.Join(faultPoints, ", "))
	}
	logger.Warn("test fault armed: the process will kill itself", "point", point, "at", n)
	var mu sync.Mutex
	hits := 0
	return func(p, item string) {
		if p != point {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		hits++
		if hits == n {
			logger.Warn("test fault: killing the process", "point", point, "item", item)
			self, _ := os.FindProcess(os.Getpid())
			_ = self.Kill()
			select {} // never return into the code under test
		}
	}, nil
}
