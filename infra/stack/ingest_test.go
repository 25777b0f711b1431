package stack

import (
	"strconv"
	"testing"
)

// TestUnreadyTaskKeepsItsAssociations: a task failing /readyz refuses new
// associations and finishes those it holds; the NLB must not reset them
// when it marks the target unhealthy (its default), but let them run for
// the deregistration delay, as a draining target's do.
func TestUnreadyTaskKeepsItsAssociations(t *testing.T) {
	forEachEnv(t, func(t *testing.T, s *synthesized) {
		tgs := s.resources("AWS::ElasticLoadBalancingV2::TargetGroup")
		if len(tgs) == 0 {
			t.Fatal("no target group")
		}
		want := map[string]string{
			TargetUnhealthyConnectionTermination:                  "false",
			TargetUnhealthyDrainingInterval:                       strconv.Itoa(s.cfg.Scp.DeregistrationDelay()),
			"deregistration_delay.timeout_seconds":                strconv.Itoa(s.cfg.Scp.DeregistrationDelay()),
			"deregistration_delay.connection_termination.enabled": "true",
		}
		for id, tg := range tgs {
			got := map[string]any{}
			for _, a := range asAnySlice(props(tg)["TargetGroupAttributes"]) {
				m := a.(map[string]any)
				got[m["Key"].(string)] = m["Value"]
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s: %s = %v, want %s", id, k, got[k], v)
				}
			}
		}
	})
}
