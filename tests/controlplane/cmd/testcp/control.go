package main

// The control socket lets a test stop and start the API server of a running `testcp up`
// (to test what its clients do during and after an outage) without tearing the cluster
// down: etcd, the other components, the port, the certificates and the kubeconfig stay.
//
// Protocol, one request per connection on the unix socket <run dir>/control.sock: the
// client writes one line, the server answers one line once the request is carried out:
//
//	apiserver status   ->  "ok running pid <pid>" | "ok stopped"
//	apiserver stop     ->  "ok stopped"   (SIGTERM, SIGKILL after 2 s)
//	apiserver kill     ->  "ok stopped"   (SIGKILL: a crash)
//	apiserver start    ->  "ok ready pid <pid>" once /readyz answers
//
// Anything else, or a request that cannot be carried out, is answered "error <reason>".

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
)

const controlSocket = "control.sock"

// stopGrace bounds a requested stop. On SIGTERM the API server stops listening at once and
// finishes the requests in flight within milliseconds, but the watches its clients hold
// open keep the process (and their event streams) alive for up to a minute; the kill
// makes the outage whole and the stop prompt.
const stopGrace = 2 * time.Second

// maxSocketPath is the room in sockaddr_un.sun_path on Linux, with its terminating NUL.
const maxSocketPath = 107

type controlRequest struct {
	command string
	reply   chan string
}

// listenControl opens the control socket. A cluster without one still works (only
// `testcp apiserver` does not), so failing to open it is logged, not fatal.
func (c *cluster) listenControl() {
	path := c.path(controlSocket)
	if len(path) > maxSocketPath {
		log.Printf("no control socket: %s is longer than %d bytes (a unix socket limit); use a shorter --dir for `testcp apiserver`", path, maxSocketPath)
		return
	}
	listener, err := net.Listen("unix", path)
	if err != nil {
		log.Printf("no control socket: %v", err)
		return
	}
	// Whoever can connect can stop the API server: only this user.
	if err := os.Chmod(path, 0o600); err != nil {
		log.Printf("no control socket: %v", err)
		listener.Close()
		return
	}
	c.control = listener
	c.requests = make(chan controlRequest)
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return // closed at shutdown
			}
			go c.serveControl(conn)
		}
	}()
}

func (c *cluster) closeControl() {
	if c.control != nil {
		c.control.Close() // also removes the socket file
	}
}

func (c *cluster) serveControl(conn net.Conn) {
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return
	}
	req := controlRequest{command: strings.TrimSpace(line), reply: make(chan string, 1)}
	answer := "error testcp is stopping"
	select {
	case c.requests <- req:
		select {
		case answer = <-req.reply:
		case <-c.stopping:
		}
	case <-c.stopping:
	}
	_ = conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintln(conn, answer)
}

// handleControl carries out one request; wait() calls it on the main goroutine.
func (c *cluster) handleControl(ctx context.Context, command string) string {
	running := c.apiserver != nil && !c.apiserver.exited()
	switch command {
	case "apiserver status":
		if running {
			return fmt.Sprintf("ok running pid %d", c.apiserver.cmd.Process.Pid)
		}
		return "ok stopped"
	case "apiserver stop", "apiserver kill":
		if !running {
			return "error kube-apiserver is not running"
		}
		c.apiserver.stopRequested = true
		if command == "apiserver kill" {
			_ = c.apiserver.cmd.Process.Kill()
			<-c.apiserver.done
		} else {
			c.apiserver.stop(stopGrace)
		}
		log.Printf("kube-apiserver stopped on request (%s)", command)
		return "ok stopped"
	case "apiserver start":
		if running {
			return fmt.Sprintf("error kube-apiserver is already running (pid %d)", c.apiserver.cmd.Process.Pid)
		}
		startCtx, cancel := context.WithTimeout(ctx, c.opts.timeout)
		defer cancel()
		if err := c.startAPIServer(startCtx); err != nil {
			// A server that failed to start is the caller's to retry, not a reason to tear
			// the cluster down; one that runs but is not ready yet can still be stopped.
			if c.apiserver.exited() {
				c.apiserver.stopRequested = true
			}
			return "error " + oneLine(err.Error())
		}
		pid := c.apiserver.cmd.Process.Pid
		c.ready.Pids["kube-apiserver"] = pid
		if err := c.writeReady(); err != nil {
			return "error " + oneLine(err.Error())
		}
		log.Printf("kube-apiserver started again on request (pid %d), ready", pid)
		return fmt.Sprintf("ok ready pid %d", pid)
	default:
		return fmt.Sprintf("error unknown request %q (want: apiserver status|stop|kill|start)", command)
	}
}

func oneLine(text string) string {
	return strings.ReplaceAll(text, "\n", " | ")
}

// runAPIServerCommand is `testcp apiserver status|stop|kill|start --dir DIR`: a client of
// the control socket of the `testcp up` running in DIR.
func runAPIServerCommand(args []string) int {
	fs := pflag.NewFlagSet("apiserver", pflag.ContinueOnError)
	dir := fs.String("dir", "", "run directory of a running testcp up (required)")
	timeout := fs.Duration("timeout", 3*time.Minute, "give up waiting for the answer after this long")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: testcp apiserver status|stop|kill|start --dir DIR\n\n"+
			"  status  whether kube-apiserver runs\n"+
			"  stop    stop it (SIGTERM, SIGKILL after 2 s); etcd and the other components keep running\n"+
			"  kill    stop it with SIGKILL, as a crash\n"+
			"  start   start it again on the same port, certificates and etcd; returns once /readyz answers\n\n%s",
			fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 1 || *dir == "" {
		fs.Usage()
		return 2
	}
	verb := fs.Arg(0)
	switch verb {
	case "status", "stop", "kill", "start":
	default:
		fmt.Fprintf(os.Stderr, "testcp apiserver: unknown action %q\n", verb)
		fs.Usage()
		return 2
	}
	answer, err := controlRequestTo(filepath.Join(*dir, controlSocket), "apiserver "+verb, *timeout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "testcp apiserver %s: %v\n", verb, err)
		return 1
	}
	if reason, failed := strings.CutPrefix(answer, "error "); failed {
		fmt.Fprintf(os.Stderr, "testcp apiserver %s: %s\n", verb, reason)
		return 1
	}
	fmt.Println(strings.TrimPrefix(answer, "ok "))
	return 0
}

func controlRequestTo(path, command string, timeout time.Duration) (string, error) {
	conn, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return "", fmt.Errorf("no `testcp up` is running with control socket %s: %w", path, err)
		}
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintln(conn, command); err != nil {
		return "", err
	}
	answer, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("reading the answer: %w", err)
	}
	return strings.TrimSpace(answer), nil
}
