FROM busybox
ARG SECRET_ID=npmrc
WORKDIR /app
RUN --mount=type=secret,id=$SECRET_ID,mode=0440,uid=1,gid=2 --mount=type=secret,id=TOKEN,env=TOKEN --mount=type=secret,id=both,env=BOTH,target=rel,required cat /run/secrets/npmrc
RUN --mount=type=secret,target=/etc/app.conf --mount=type=secret,source=src,env= true
