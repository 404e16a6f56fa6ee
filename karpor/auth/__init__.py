"""Identity, authentication, authorization, the gateway CA and user kubeconfigs."""
