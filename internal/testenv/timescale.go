package testenv

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

// TimeoutScaleEnv names the factor by which tests stretch the deadlines of
// their waits (polls for a gateway, a build, a log line): a float, default
// 1. A slow or busy machine sets it above 1 rather than tests growing
// fixed margins; it never shortens a sleep that paces a poll.
const TimeoutScaleEnv = "BUILDGW_TEST_TIMEOUT_SCALE"

// TimeoutScale returns the factor of TimeoutScaleEnv, or an error naming
// a value that is not a positive number.
func TimeoutScale() (float64, error) {
	v := os.Getenv(TimeoutScaleEnv)
	if v == "" {
		return 1, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || !(f > 0 && f <= 1000) {
		return 0, fmt.Errorf("%s=%q: want a positive number such as 1.5", TimeoutScaleEnv, v)
	}
	return f, nil
}

// Scale returns the deadline d stretched by TimeoutScaleEnv. It is read
// here only, on every call (it is cheap), so that no package holds it. A
// bad value panics: a misconfigured run must not pass with the defaults.
func Scale(d time.Duration) time.Duration {
	f, err := TimeoutScale()
	if err != nil {
		panic(err)
	}
	return time.Duration(float64(d) * f)
}
