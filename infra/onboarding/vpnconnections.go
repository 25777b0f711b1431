package onboarding

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// ErrNoVPNConnection is returned when a describe-vpn-connections document
// does not hold the wanted connection or its two tunnel addresses.
var ErrNoVPNConnection = errors.New("onboarding: VPN connection not found")

// vpnConnection is the part of an EC2 VpnConnection the kit reads. The full
// API answer also holds the tunnels' pre-shared keys (TunnelOptions[].
// PreSharedKey and the CustomerGatewayConfiguration XML): they are never
// decoded here.
type vpnConnection struct {
	VpnConnectionID string `json:"VpnConnectionId"`
	Options         struct {
		TunnelOptions []struct {
			OutsideIPAddress string `json:"OutsideIpAddress"`
		} `json:"TunnelOptions"`
	} `json:"Options"`
	VgwTelemetry []struct {
		OutsideIPAddress string `json:"OutsideIpAddress"`
	} `json:"VgwTelemetry"`
}

// ParseVPNConnections returns the two tunnel outside addresses of the VPN
// connection id from the JSON that
//
//	aws ec2 describe-vpn-connections --output json
//
// prints ({"VpnConnections": [...]}), or from a bare array of connections
// (what a --query 'VpnConnections[]...' projection prints). Addresses come
// from Options.TunnelOptions (tunnel 1 first, as the console numbers them),
// else from VgwTelemetry.
func ParseVPNConnections(r io.Reader, id string) ([]string, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxOutputsSize+1))
	if err != nil {
		return nil, fmt.Errorf("onboarding: read vpn connections: %w", err)
	}
	if len(data) > maxOutputsSize {
		return nil, fmt.Errorf("onboarding: read vpn connections: larger than %d bytes", maxOutputsSize)
	}
	var conns []vpnConnection
	var wrapped struct {
		VpnConnections []vpnConnection `json:"VpnConnections"`
	}
	if err := json.Unmarshal(data, &wrapped); err == nil {
		conns = wrapped.VpnConnections
	} else if err := json.Unmarshal(data, &conns); err != nil {
		return nil, fmt.Errorf("onboarding: parse vpn connections: want describe-vpn-connections JSON: %w", err)
	}
	for _, c := range conns {
		if c.VpnConnectionID != id {
			continue
		}
		var addrs []string
		for _, t := range c.Options.TunnelOptions {
			addrs = append(addrs, t.OutsideIPAddress)
		}
		if len(addrs) != 2 {
			addrs = addrs[:0]
			for _, t := range c.VgwTelemetry {
				addrs = append(addrs, t.OutsideIPAddress)
			}
		}
		if len(addrs) != 2 {
			return nil, fmt.Errorf("%w: %s has %d tunnel addresses in Options.TunnelOptions and %d in VgwTelemetry, want 2",
				ErrNoVPNConnection, id, len(c.Options.TunnelOptions), len(c.VgwTelemetry))
		}
		for _, a := range addrs {
			if _, err := netip.ParseAddr(a); err != nil {
				return nil, fmt.Errorf("onboarding: parse vpn connections: %s: tunnel address %q: %w", id, a, err)
			}
		}
		return addrs, nil
	}
	return nil, fmt.Errorf("%w: %s", ErrNoVPNConnection, id)
}
