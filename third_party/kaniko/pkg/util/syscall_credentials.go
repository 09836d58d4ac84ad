/*
Copyright 2020 Google LLC

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package util

import (
	"fmt"
	"os/user"
	"strconv"
	"strings"
	"syscall"

	"github.com/pkg/errors"
	"github.com/sirupsen/logrus"
)

func SyscallCredentials(userStr string) (*syscall.Credential, error) {
	// RUN as a user named but not in /etc/passwd fails, as runc fails it
	// for Docker and BuildKit; root is no exception there (LookupUser
	// makes it one for WORKDIR and ownership, as BuildKit does).
	if name := strings.Split(userStr, ":")[0]; name != "" {
		if _, err := strconv.ParseUint(name, 10, 32); err != nil {
			if _, err := user.Lookup(name); err != nil {
				return nil, fmt.Errorf("unable to find user %s: no matching entries in passwd file", name)
			}
		}
	}
	uid, gid, err := getUIDAndGIDFromString(userStr)
	if err != nil {
		return nil, errors.Wrap(err, "get uid/gid")
	}

	u, err := LookupUser(fmt.Sprint(uid))
	if err != nil {
		return nil, errors.Wrap(err, "lookup")
	}
	logrus.Infof("Util.Lookup returned: %+v", u)

	// initiliaze empty
	groups := []uint32{}

	gidStr, err := groupIDs(u)
	if err != nil {
		return nil, errors.Wrap(err, "group ids for user")
	}

	explicitGroup := len(strings.Split(userStr, ":")) > 1
	for j, g := range gidStr {
		i, err := strconv.ParseUint(g, 10, 32)
		if err != nil {
			return nil, errors.Wrap(err, "parseuint")
		}
		// The user's primary group (first) is not a supplementary
		// group when USER names another one, as in Docker.
		if j == 0 && explicitGroup && g == u.Gid && uint32(i) != gid {
			continue
		}

		groups = append(groups, uint32(i))
	}

	// USER user:group: the named group is the only supplementary group,
	// as runc gives Docker and BuildKit (memberships count only in the
	// implicit form).
	if explicitGroup {
		groups = []uint32{gid}
	}

	if !explicitGroup {
		if u.Gid != "" {
			gid, _ = getGID(u.Gid)
		} else {
			// A uid without a passwd entry runs with gid 0, as in
			// Docker, not with gid = uid.
			gid = 0
		}
	}

	// The primary group is always among the supplementary ones, as
	// containerd (ensureAdditionalGids) and Docker give them: `id` shows
	// groups=0(root) for a numeric USER without a passwd entry.
	primary := false
	for _, g := range groups {
		primary = primary || g == gid
	}
	if !primary {
		groups = append([]uint32{gid}, groups...)
	}

	return &syscall.Credential{
		Uid:    uid,
		Gid:    gid,
		Groups: groups,
	}, nil
}
