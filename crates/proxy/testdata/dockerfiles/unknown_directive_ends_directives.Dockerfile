# foo=bar
# escape=`
FROM reg.example/a:1 `
  AS b
