package jetstream

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// ReaderUser is the read-only user of the embedded server, for inspecting
// the log with the `nats` CLI.
const ReaderUser = "reader"

// ClientAuth is how the sniper authenticates to NATS: user and password,
// or a creds file (JWT and nkey seed); TLS with CAFile (servers signed by a
// private CA) and CertFile/KeyFile (a client certificate).
type ClientAuth struct {
	User, Password string
	CredsFile      string
	CAFile         string
	CertFile       string
	KeyFile        string
}

// options turns the settings into nats.go options, checking that the
// files named exist, so a typo is an error naming the file rather than a
// TLS or authorization failure.
func (a ClientAuth) options() ([]nats.Option, error) {
	var opts []nats.Option
	for flag, path := range map[string]string{"--nats-creds": a.CredsFile, "--nats-ca": a.CAFile, "--nats-cert": a.CertFile, "--nats-key": a.KeyFile} {
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("%s: %w", flag, err)
		}
	}
	if (a.CertFile == "") != (a.KeyFile == "") {
		return nil, fmt.Errorf("--nats-cert and --nats-key go together")
	}
	if a.User != "" || a.Password != "" {
		opts = append(opts, nats.UserInfo(a.User, a.Password))
	}
	if a.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(a.CredsFile))
	}
	if a.CAFile != "" {
		opts = append(opts, nats.RootCAs(a.CAFile))
	}
	if a.CertFile != "" {
		opts = append(opts, nats.ClientCert(a.CertFile, a.KeyFile))
	}
	return opts, nil
}

// ServerAuth is who may use the embedded server. With a User, every
// client must log in: User with full access (the sniper itself, and the
// operator's `nats` CLI), and, when ReaderPassword is set, ReaderUser with
// the read-only permissions of readerPermissions. The routes between the
// nodes of an embedded cluster use User and Password too.
type ServerAuth struct {
	User, Password string
	ReaderPassword string
}

// Enabled reports whether clients must authenticate.
func (a ServerAuth) Enabled() bool { return a.User != "" }

// readerPermissions let the `nats` CLI inspect the log and nothing else:
// read the stream's and the consumers' state, read messages (a direct get,
// a get through the leader, or an ordered consumer, which `nats stream
// view` and `nats kv` create), and subscribe to the live subjects. It may
// not publish to sniper.> (an event, a command or a decision), nor create,
// update, purge or delete a stream, nor delete a message or a consumer:
// every such API subject is outside the list.
func readerPermissions() *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			"$JS.API.INFO",                 // nats account info
			"$JS.API.STREAM.NAMES",         // nats stream ls
			"$JS.API.STREAM.LIST",          // nats stream report
			"$JS.API.STREAM.INFO.>",        // nats stream info, subjects
			"$JS.API.STREAM.MSG.GET.>",     // nats stream get
			"$JS.API.DIRECT.GET.>",         // the same from any replica, nats kv get
			"$JS.API.CONSUMER.NAMES.>",     // nats consumer ls
			"$JS.API.CONSUMER.LIST.>",      // nats consumer report
			"$JS.API.CONSUMER.INFO.>",      // nats consumer info
			"$JS.API.CONSUMER.CREATE.>",    // the ordered consumer of nats stream view
			"$JS.API.CONSUMER.MSG.NEXT.>",  // pulling from it
			"$JS.FC.>",                     // flow control of a push consumer
			"$JS.ACK." + StreamName + ".>", // nats stream view acks what it reads (its own consumer's state only)
			"$SYS.REQ.USER.INFO",           // nats account info
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX.>", "sniper.>", "$KV.SNIPER_ACTIVE.>"}},
	}
}

// users is the embedded server's user list for a.
func (a ServerAuth) users() []*server.User {
	if !a.Enabled() {
		return nil
	}
	users := []*server.User{{Username: a.User, Password: a.Password}}
	if a.ReaderPassword != "" {
		users = append(users, &server.User{Username: ReaderUser, Password: a.ReaderPassword, Permissions: readerPermissions()})
	}
	return users
}

// Built-in users of a clustered embedded server.
const (
	// systemUser belongs to the system account, with a random password
	// only this process knows: the active instance uses it to move the
	// JetStream meta leader off its own server (Server.StepDownMeta).
	systemUser = "_sniper_system"
	// anonymousUser is who a client without credentials is: with auth
	// off, anyone, with full access, as on a server without users; with
	// auth on, nobody, allowed nothing.
	anonymousUser = "_anonymous"
)

// clusterAccounts configures the users of a clustered server: a's, the
// system user in the system account, and the anonymous user. With exactly
// the global and the system account, nats-server enables JetStream for
// the global account of a cluster node by itself; and since the anonymous
// user is named, it adds no no-auth user of its own.
func (a ServerAuth) clusterAccounts(opts *server.Options) (systemPassword string, err error) {
	systemPassword, err = randomSecret()
	if err != nil {
		return "", err
	}
	anonymousPassword, err := randomSecret()
	if err != nil {
		return "", err
	}
	sys := server.NewAccount(server.DEFAULT_SYSTEM_ACCOUNT)
	opts.Accounts = []*server.Account{sys}
	opts.SystemAccount = server.DEFAULT_SYSTEM_ACCOUNT
	anonymous := &server.User{Username: anonymousUser, Password: anonymousPassword}
	if a.Enabled() {
		deny := &server.SubjectPermission{Deny: []string{">"}}
		anonymous.Permissions = &server.Permissions{Publish: deny, Subscribe: deny}
	}
	opts.Users = append([]*server.User{{Username: systemUser, Password: systemPassword, Account: sys}, anonymous}, a.users()...)
	opts.NoAuthUser = anonymousUser
	return systemPassword, nil
}

func randomSecret() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random password: %w", err)
	}
	return hex.EncodeToString(b), nil
}
