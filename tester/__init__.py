"""The status API and callback source the suite is tested against: a port of the assessment's
``tester_service.go`` with knobs for faults, pacing and observation."""
