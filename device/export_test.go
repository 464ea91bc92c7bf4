package device

// DirOf exposes a device's folder to the external tests.
func DirOf(d *Device) string { return d.cfg.Dir }
